/* Block Kit and mrkdwn, rendered the way Slack shows them — safely.
 *
 * Nothing that comes from a message is ever parsed as HTML: every piece of text becomes a DOM
 * text node (textContent), links only get http(s)/mailto hrefs, images from elsewhere are shown
 * as their alt text (the page works offline). Shared by the playground and `gonogo preview`.
 */
"use strict";

const BlockKit = (() => {
  const EMOJI = {
    white_check_mark: "✅", heavy_check_mark: "✔️", x: "❌", warning: "⚠️", lock: "🔒", unlock: "🔓",
    hourglass: "⌛", hourglass_flowing_sand: "⏳", rotating_light: "🚨", no_entry: "⛔", no_entry_sign: "🚫",
    large_green_circle: "🟢", large_yellow_circle: "🟡", red_circle: "🔴", black_circle: "⚫",
    white_circle: "⚪", large_orange_diamond: "🔶", small_orange_diamond: "🔸", information_source: "ℹ️",
    memo: "📝", page_facing_up: "📄", paperclip: "📎", link: "🔗", rocket: "🚀", bell: "🔔",
    alarm_clock: "⏰", calendar: "📅", clock1: "🕐", repeat: "🔁", arrows_counterclockwise: "🔄",
    leftwards_arrow_with_hook: "↩️", rewind: "⏪", fire: "🔥", fire_engine: "🚒", bust_in_silhouette: "👤",
    busts_in_silhouette: "👥", eyes: "👀", thumbsup: "👍", "+1": "👍", thumbsdown: "👎", "-1": "👎",
    tada: "🎉", construction: "🚧", shield: "🛡️", mag: "🔍", bar_chart: "📊", chart_with_upwards_trend: "📈",
    package: "📦", gear: "⚙️", wrench: "🔧", hammer_and_wrench: "🛠️", pencil: "📝", pencil2: "✏️",
    question: "❓", exclamation: "❗", heavy_exclamation_mark: "❗", black_square_for_stop: "⏹️",
    double_vertical_bar: "⏸️", arrow_forward: "▶️", fast_forward: "⏩", black_right_pointing_double_triangle_with_vertical_bar: "⏭️",
    speech_balloon: "💬", thread: "🧵", bookmark: "🔖", label: "🏷️", key: "🔑", zap: "⚡", skull: "💀",
    sos: "🆘", checkered_flag: "🏁", stopwatch: "⏱️", timer_clock: "⏲️", traffic_light: "🚥",
    vertical_traffic_light: "🚦", crossed_fingers: "🤞", ok: "🆗", new: "🆕", free: "🆓",
  };
  const SAFE_URL = /^(https?:\/\/|mailto:)/i;

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // Slack escapes only these three in message text; everything else is literal.
  function decode(text) {
    return String(text).replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");
  }

  function emojify(text) {
    return String(text).replace(/:([a-z0-9_+\-]+):/g, (whole, name) => EMOJI[name] || whole);
  }

  // One regex, earliest match wins. Formatting needs a boundary on both sides, as in Slack, and
  // text next to a marker may not be a zero-width space (how the bot keeps outside text literal).
  const INLINE = new RegExp(
    [
      "`(?<code>[^`\\n]+)`",
      "<(?<angle>[^<>\\s][^<>]*)>",
      "(?<bpre>^|[^\\w*])\\*(?<bold>[^*\\s\\u200b](?:[^*\\n]*[^*\\s\\u200b])?)\\*(?![\\w*])",
      "(?<ipre>^|[^\\w_])_(?<italic>[^_\\s\\u200b](?:[^_\\n]*[^_\\s\\u200b])?)_(?![\\w_])",
      "(?<spre>^|[^\\w~])~(?<strike>[^~\\s\\u200b](?:[^~\\n]*[^~\\s\\u200b])?)~(?![\\w~])",
    ].join("|"),
    "g",
  );

  function text(parent, raw) {
    if (raw) parent.appendChild(document.createTextNode(emojify(decode(raw))));
  }

  function special(angle, ctx) {
    const [target, label] = splitOnce(angle, "|");
    if (target.startsWith("@")) {
      const id = target.slice(1);
      return el("span", "mention", "@" + (label || (ctx.names && ctx.names[id]) || id));
    }
    if (target.startsWith("#")) {
      const id = target.slice(1);
      return el("span", "mention channel", "#" + (label || (ctx.channels && ctx.channels[id]) || id));
    }
    if (target.startsWith("!")) {
      const word = target.slice(1);
      if (["here", "channel", "everyone"].includes(word)) return el("span", "mention broadcast", "@" + word);
      if (word.startsWith("subteam^")) return el("span", "mention", "@" + (label || word.slice(8)));
      return el("span", null, decode(label || word));
    }
    const url = decode(target);
    if (SAFE_URL.test(url)) {
      const a = el("a", "link", decode(label || target));
      a.href = url;
      a.target = "_blank";
      a.rel = "noopener noreferrer";
      return a;
    }
    // Not a Slack control sequence (e.g. raw `<img …>` from a careless app): show it as typed.
    return document.createTextNode("<" + decode(angle) + ">");
  }

  function splitOnce(s, sep) {
    const i = s.indexOf(sep);
    return i < 0 ? [s, ""] : [s.slice(0, i), s.slice(i + 1)];
  }

  function inline(parent, source, ctx) {
    let last = 0;
    INLINE.lastIndex = 0;
    for (const m of source.matchAll(INLINE)) {
      const g = m.groups;
      let start = m.index;
      const pre = g.bpre ?? g.ipre ?? g.spre ?? "";
      text(parent, source.slice(last, start) + pre);
      if (g.code !== undefined) parent.appendChild(el("code", null, decode(g.code)));
      else if (g.angle !== undefined) parent.appendChild(special(g.angle, ctx));
      else {
        const tag = g.bold !== undefined ? "b" : g.italic !== undefined ? "i" : "s";
        const node = el(tag);
        inline(node, g.bold ?? g.italic ?? g.strike, ctx);
        parent.appendChild(node);
      }
      last = m.index + m[0].length;
    }
    text(parent, source.slice(last));
  }

  function mrkdwn(source, ctx = {}) {
    const root = el("span", "mrkdwn");
    const parts = String(source ?? "").split(/```([\s\S]*?)```/);
    parts.forEach((part, i) => {
      if (i % 2 === 1) root.appendChild(el("pre", "code-block", decode(part.replace(/^\n/, ""))));
      else if (part) {
        // Quoted lines (`>` or `&gt;` at the start) get the quote bar.
        const lines = part.split("\n");
        let plain = [];
        const flush = () => {
          if (plain.length) inline(root, plain.join("\n"), ctx);
          plain = [];
        };
        lines.forEach((line, n) => {
          const quoted = /^(&gt;|>)\s?/.exec(line);
          if (quoted) {
            flush();
            const q = el("span", "quote");
            inline(q, line.slice(quoted[0].length), ctx);
            root.appendChild(q);
          } else plain.push(line + (n < lines.length - 1 ? "\n" : ""));
        });
        flush();
      }
    });
    return root;
  }

  function textObject(obj, ctx) {
    if (!obj) return el("span");
    if (typeof obj === "string") return el("span", "plain", obj);
    if (obj.type === "mrkdwn") return mrkdwn(obj.text, ctx);
    return el("span", "plain", obj.emoji === false ? obj.text : emojify(obj.text ?? ""));
  }

  function button(element, ctx, block) {
    const b = el("button", "bk-button" + (element.style ? " " + element.style : ""));
    b.type = "button";
    b.appendChild(textObject(element.text, ctx));
    if (element.url && SAFE_URL.test(element.url)) b.title = element.url;
    if (ctx.onAction) {
      b.addEventListener("click", () => {
        const go = () => ctx.onAction(element, block);
        if (element.confirm) confirmDialog(element.confirm, ctx, go);
        else go();
      });
    } else b.disabled = true;
    return b;
  }

  function confirmDialog(confirm, ctx, proceed) {
    const overlay = el("div", "overlay confirm");
    const box = el("div", "dialog");
    box.setAttribute("role", "alertdialog");
    box.setAttribute("aria-modal", "true");
    const title = el("h2", null);
    title.appendChild(textObject(confirm.title, ctx));
    box.setAttribute("aria-label", (confirm.title && confirm.title.text) || "Are you sure?");
    const body = el("div", "dialog-body");
    body.appendChild(textObject(confirm.text, ctx));
    const row = el("div", "dialog-buttons");
    const deny = el("button", "bk-button", (confirm.deny && confirm.deny.text) || "Cancel");
    const yes = el("button", "bk-button " + (confirm.style || "primary"), (confirm.confirm && confirm.confirm.text) || "Yes");
    deny.type = yes.type = "button";
    deny.addEventListener("click", () => overlay.remove());
    yes.addEventListener("click", () => {
      overlay.remove();
      proceed();
    });
    row.append(deny, yes);
    box.append(title, body, row);
    overlay.appendChild(box);
    document.body.appendChild(overlay);
    yes.focus();
  }

  function element(element, ctx, block) {
    if (!element) return el("span");
    switch (element.type) {
      case "button":
        return button(element, ctx, block);
      case "image":
        return el("span", "image-alt", "🖼 " + (element.alt_text || "image"));
      case "mrkdwn":
      case "plain_text":
        return textObject(element, ctx);
      default:
        return el("span", "unsupported", `[${element.type} element]`);
    }
  }

  function input(block, ctx) {
    const wrap = el("div", "bk-input");
    wrap.dataset.blockId = block.block_id || "";
    const id = "in-" + (block.block_id || Math.random().toString(36).slice(2));
    const label = el("label", null);
    label.htmlFor = id;
    label.appendChild(textObject(block.label, ctx));
    if (block.optional) label.appendChild(el("span", "optional", " (optional)"));
    wrap.appendChild(label);
    const e = block.element || {};
    if (e.type === "plain_text_input") {
      const field = el(e.multiline ? "textarea" : "input", "field");
      field.id = id;
      field.dataset.actionId = e.action_id || "";
      field.dataset.required = block.optional ? "" : "1";
      if (e.placeholder) field.placeholder = e.placeholder.text || "";
      if (e.initial_value) field.value = e.initial_value;
      if (e.max_length) field.maxLength = e.max_length;
      wrap.appendChild(field);
    } else wrap.appendChild(el("span", "unsupported", `[${e.type} input]`));
    if (block.hint) {
      const hint = el("div", "hint");
      hint.appendChild(textObject(block.hint, ctx));
      wrap.appendChild(hint);
    }
    wrap.appendChild(el("div", "field-error"));
    return wrap;
  }

  function block(b, ctx) {
    let node;
    switch (b.type) {
      case "header":
        node = el("h3", "bk-header");
        node.appendChild(textObject(b.text, ctx));
        break;
      case "section": {
        node = el("div", "bk-section");
        const body = el("div", "bk-section-body");
        if (b.text) body.appendChild(textObject(b.text, ctx));
        if (b.fields && b.fields.length) {
          const grid = el("div", "bk-fields");
          b.fields.forEach((f) => grid.appendChild(el("div", "bk-field")).appendChild(textObject(f, ctx)));
          body.appendChild(grid);
        }
        node.appendChild(body);
        if (b.accessory) node.appendChild(el("div", "bk-accessory")).appendChild(element(b.accessory, ctx, b));
        break;
      }
      case "context":
        node = el("div", "bk-context");
        (b.elements || []).forEach((e) => node.appendChild(element(e, ctx, b)));
        break;
      case "divider":
        node = el("hr", "bk-divider");
        break;
      case "actions":
        node = el("div", "bk-actions");
        (b.elements || []).forEach((e) => node.appendChild(element(e, ctx, b)));
        break;
      case "input":
        node = input(b, ctx);
        break;
      case "image":
        node = el("div", "image-alt", "🖼 " + (b.alt_text || "image"));
        break;
      default:
        node = el("div", "unsupported", `[${b.type} block]`);
    }
    if (b.block_id) node.dataset.blockId = b.block_id;
    return node;
  }

  function blocks(list, ctx = {}) {
    const frag = el("div", "bk-blocks");
    (list || []).forEach((b) => frag.appendChild(block(b, ctx)));
    return frag;
  }

  // A message body: its blocks, or the `text` fallback (mrkdwn) when it has none.
  function message(msg, ctx = {}) {
    if (msg.blocks && msg.blocks.length) return blocks(msg.blocks, ctx);
    const body = el("div", "bk-blocks");
    body.appendChild(mrkdwn(msg.text || "", ctx));
    return body;
  }

  return { mrkdwn, blocks, message, textObject, el, decode };
})();
