/* The playground's Slack client: sidebar, messages, composer, modals, live updates.
 *
 * Every action goes to this page's backend (/pg/...), which sends the bot the signed request
 * Slack would send. The page only ever shows what the acting user would see in Slack.
 */
"use strict";

(() => {
  const { el } = BlockKit;
  const state = { workspace: null, user: null, channel: null, view: null, viewKey: null, loading: false, again: false };
  const $ = (id) => document.getElementById(id);

  async function api(path, body) {
    const response = await fetch(path, body === undefined ? {} : {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status} ${await response.text()}`);
    return response.json();
  }

  // -- sidebar and picker ------------------------------------------------------------------------

  function renderPicker() {
    const ws = state.workspace;
    const select = $("acting-as");
    select.replaceChildren();
    ws.groups.forEach((group) => {
      const og = el("optgroup");
      og.label = group.role;
      group.users.forEach((id) => og.appendChild(option(id, `${ws.people[id].name} (${group.role})`)));
      select.appendChild(og);
    });
    const outside = el("optgroup");
    outside.label = "No role";
    outside.appendChild(option(ws.outsider, "someone outside every role"));
    select.appendChild(outside);
    select.value = state.user;
    select.addEventListener("change", () => {
      state.user = select.value;
      localStorage.setItem("gonogo.user", state.user);
      state.viewKey = null;
      // Someone else's DM is not theirs to read: back to the first channel.
      if (state.channel.startsWith("D")) state.channel = (ws.channels[0] && ws.channels[0].id) || "";
      state.dm = null;
      renderSidebar();
      refresh();
    });
  }

  function option(value, label) {
    const o = el("option", null, label);
    o.value = value;
    return o;
  }

  function renderSidebar() {
    const ws = state.workspace;
    const list = $("channels");
    list.replaceChildren();
    const channels = [...ws.channels, ...(state.others || []).map((id) => ({ id, name: id }))];
    channels.forEach((c) => list.appendChild(entry(c.id, "# " + c.name)));
    const dms = $("dms");
    dms.replaceChildren();
    if (state.dm) dms.appendChild(entry(state.dm, "gonogo (app)"));
  }

  function entry(id, label) {
    const li = el("li");
    const a = el("a", id === state.channel ? "active" : "", label);
    a.href = "#" + id;
    a.addEventListener("click", (event) => {
      event.preventDefault();
      go(id);
    });
    li.appendChild(a);
    return li;
  }

  function go(channel) {
    state.channel = channel;
    history.replaceState(null, "", "#" + channel);
    renderSidebar();
    refresh();
  }

  // -- messages ----------------------------------------------------------------------------------

  function ctx() {
    const names = { ...state.names };
    const channels = {};
    state.workspace.channels.forEach((c) => (channels[c.id] = c.name));
    return { names, channels };
  }

  function sender(msg) {
    if (msg.user === "USLACKBOT") return "Slackbot";
    if (msg.bot_id || msg.user === state.workspace.bot.id) return "gonogo";
    return (state.names && state.names[msg.user]) || msg.user || "someone";
  }

  function timeOf(ts) {
    const d = new Date(parseFloat(ts) * 1000);
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  function renderMessage(msg, ephemeral) {
    const node = el("article", "message" + (ephemeral ? " ephemeral" : ""));
    node.dataset.ts = msg.ts;
    const head = el("div", "message-head");
    const who = sender(msg);
    head.append(el("span", "avatar", who.slice(0, 1).toUpperCase()), el("span", "sender", who));
    if (msg.bot_id) head.appendChild(el("span", "app-badge", "APP"));
    head.appendChild(el("time", "time", timeOf(msg.ts)));
    if (msg.edited) head.appendChild(el("span", "edited", "(edited)"));
    node.appendChild(head);
    if (ephemeral) node.appendChild(el("div", "only-you", "Only visible to you"));
    const context = {
      ...ctx(),
      onAction: (element, block) => click(msg, ephemeral, element, block),
    };
    node.appendChild(BlockKit.message(msg, context));
    (msg.files || []).forEach((f) => node.appendChild(el("div", "file", "📎 " + (f.title || f.name))));
    return node;
  }

  function renderMessages(data) {
    const box = $("messages");
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
    const all = [
      ...data.messages.map((m) => ({ msg: m, ephemeral: false })),
      ...data.ephemerals.map((m) => ({ msg: m, ephemeral: true })),
    ].sort((a, b) => parseFloat(a.msg.ts) - parseFloat(b.msg.ts));
    const parents = new Set(data.messages.filter((m) => !m.thread_ts || m.thread_ts === m.ts).map((m) => m.ts));
    const threads = {};
    const top = [];
    all.forEach((item) => {
      const t = item.msg.thread_ts;
      if (t && t !== item.msg.ts && parents.has(t)) (threads[t] = threads[t] || []).push(item);
      else top.push(item);
    });
    const frag = document.createDocumentFragment();
    top.forEach(({ msg, ephemeral }) => {
      const node = renderMessage(msg, ephemeral);
      const replies = threads[msg.ts];
      if (replies && replies.length) {
        const thread = el("details", "thread");
        thread.open = state.openThreads.has(msg.ts);
        thread.addEventListener("toggle", () => {
          if (thread.open) state.openThreads.add(msg.ts);
          else state.openThreads.delete(msg.ts);
        });
        const n = replies.length;
        thread.appendChild(el("summary", null, `${n} ${n === 1 ? "reply" : "replies"}`));
        replies.forEach((r) => thread.appendChild(renderMessage(r.msg, r.ephemeral)));
        node.appendChild(thread);
      }
      frag.appendChild(node);
    });
    if (!top.length) frag.appendChild(el("p", "empty", "No messages yet. Try /gonogo help"));
    box.replaceChildren(frag);
    if (atBottom) box.scrollTop = box.scrollHeight;
  }

  async function click(msg, ephemeral, element, block) {
    await api("/pg/action", {
      user: state.user,
      channel: state.channel,
      ts: msg.ts,
      ephemeral,
      block_id: block.block_id || "",
      action_id: element.action_id,
      value: element.value,
      text: element.text && element.text.text,
    });
  }

  // -- modals ------------------------------------------------------------------------------------

  function renderView(view) {
    const root = $("modal-root");
    const key = view ? `${view.id}:${view.hash}` : null;
    if (key === state.viewKey) return; // unchanged: keep what the user is typing
    state.viewKey = key;
    root.replaceChildren();
    if (!view) return;
    const overlay = el("div", "overlay");
    const form = el("form", "dialog modal");
    form.setAttribute("role", "dialog");
    form.setAttribute("aria-modal", "true");
    form.setAttribute("aria-label", (view.title && view.title.text) || "Modal");
    form.dataset.viewId = view.id;
    const head = el("h2", null);
    head.appendChild(BlockKit.textObject(view.title, ctx()));
    form.appendChild(head);
    form.appendChild(BlockKit.blocks(view.blocks, ctx()));
    const general = el("div", "form-error");
    form.appendChild(general);
    const row = el("div", "dialog-buttons");
    const close = el("button", "bk-button", (view.close && view.close.text) || "Cancel");
    close.type = "button";
    close.addEventListener("click", () => api("/pg/close", { user: state.user, view_id: view.id }).then(refresh));
    row.appendChild(close);
    if (view.submit) {
      const submit = el("button", "bk-button primary", view.submit.text);
      submit.type = "submit";
      row.appendChild(submit);
    }
    form.appendChild(row);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      submitView(form, view);
    });
    overlay.appendChild(form);
    root.appendChild(overlay);
    const first = form.querySelector(".field");
    if (first) first.focus();
  }

  async function submitView(form, view) {
    const values = {};
    let missing = false;
    form.querySelectorAll(".bk-input").forEach((wrap) => {
      wrap.querySelector(".field-error").textContent = "";
      wrap.classList.remove("has-error");
      const field = wrap.querySelector(".field");
      if (!field) return;
      // Slack's client refuses an empty required input before anything is sent.
      if (field.dataset.required && field.value === "") {
        showError(wrap, "Please complete this required field.");
        missing = true;
      }
      (values[wrap.dataset.blockId] = values[wrap.dataset.blockId] || {})[field.dataset.actionId] = field.value;
    });
    if (missing) return;
    const answer = await api("/pg/submit", { user: state.user, view_id: view.id, values });
    if (answer.errors) {
      form.querySelectorAll(".bk-input").forEach((wrap) => {
        const message = answer.errors[wrap.dataset.blockId];
        if (message) showError(wrap, message);
      });
    } else if (answer.error) {
      form.querySelector(".form-error").textContent = answer.error;
    } else {
      refresh();
    }
  }

  function showError(wrap, message) {
    wrap.classList.add("has-error");
    wrap.querySelector(".field-error").textContent = message;
  }

  // -- loading and live updates --------------------------------------------------------------------

  async function refresh() {
    if (state.loading) {
      state.again = true;
      return;
    }
    state.loading = true;
    try {
      do {
        state.again = false;
        const data = await api(`/pg/state?user=${encodeURIComponent(state.user)}&channel=${encodeURIComponent(state.channel)}`);
        state.names = data.names;
        const dmChanged = state.dm !== data.dm || (data.other_channels || []).length !== (state.others || []).length;
        state.dm = data.dm;
        state.others = data.other_channels;
        if (dmChanged) renderSidebar();
        const name = data.channel.startsWith("D") ? "gonogo (app)" : "# " + ((data.channel_names || {})[data.channel] || data.channel);
        $("channel-title").textContent = name;
        renderMessages(data);
        renderView(data.view);
        document.body.dataset.version = String(data.version);
      } while (state.again);
    } finally {
      state.loading = false;
    }
  }

  function live() {
    const source = new EventSource("/pg/events");
    source.onmessage = () => refresh();
    source.onopen = () => $("live").classList.add("on");
    source.onerror = () => $("live").classList.remove("on");
  }

  async function send(event) {
    event.preventDefault();
    const input = $("message");
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    const path = text.startsWith("/") ? "/pg/command" : "/pg/message";
    await api(path, { user: state.user, channel: state.channel, text });
    refresh();
  }

  async function start() {
    state.workspace = await api("/pg/workspace");
    state.openThreads = new Set();
    const ws = state.workspace;
    const remembered = localStorage.getItem("gonogo.user");
    const first = ws.groups.length && ws.groups[0].users.length ? ws.groups[0].users[0] : ws.outsider;
    state.user = remembered && ws.people[remembered] ? remembered : first;
    const wanted = decodeURIComponent(location.hash.slice(1));
    state.channel = wanted || (ws.channels[0] && ws.channels[0].id) || "";
    renderPicker();
    renderSidebar();
    $("composer").addEventListener("submit", send);
    await refresh();
    live();
    document.body.dataset.ready = "1";
  }

  document.addEventListener("DOMContentLoaded", () => {
    start().catch((error) => {
      $("messages").replaceChildren(el("p", "error", "The playground could not load: " + error.message));
    });
  });
})();
