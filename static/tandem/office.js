/* Back office: the inbox refreshes itself from /ws/office/ events; the conversation workspace
 * follows the chat socket, streams the assistant's reply and sends the agent's replies.
 * Both re-fetch their own page and swap the changed regions instead of reloading. Needs socket.js. */
(function () {
  "use strict";

  const { el, uuid } = window.Tandem;

  function setLive(note, state, detail) {
    if (!note) return;
    note.dataset.state = state;
    note.textContent = state === "open" ? "Live" : state === "closed" ? "Live updates unavailable"
      : detail && detail.attempt ? "Reconnecting…" : "Connecting…";
  }

  async function fetchPage() {
    const resp = await fetch(window.location.href, { headers: { "X-Requested-With": "fetch" }, credentials: "same-origin" });
    if (!resp.ok || resp.redirected) return null;
    return new DOMParser().parseFromString(await resp.text(), "text/html");
  }

  // A region the user is working in (focus inside, a textarea they typed in, a choice they
  // changed, or a form showing errors to fix) is not replaced.
  function busy(region) {
    if (region.contains(document.activeElement) && /^(TEXTAREA|INPUT|SELECT)$/.test(document.activeElement.tagName)) return true;
    if (region.querySelector('[aria-invalid="true"]')) return true;
    if ([...region.querySelectorAll("select")].some((s) => [...s.options].some((o) => o.selected !== o.defaultSelected))) return true;
    return [...region.querySelectorAll("textarea")].some((t) => t.value !== t.defaultValue);
  }

  function debounce(fn, ms) {
    let t = null;
    return () => { window.clearTimeout(t); t = window.setTimeout(fn, ms); };
  }

  // ---------------------------------------------------------------------------------------
  // Regions: every workspace page marks what may change with data-region; a refresh fetches
  // the page again and swaps the regions that changed (unless the person is working in one).
  // data-lazy regions are fetched from their own URL after the page (slow lookups).
  // ---------------------------------------------------------------------------------------
  async function loadLazy() {
    for (const box of document.querySelectorAll("[data-lazy]")) {
      if (busy(box)) continue;
      try {
        const resp = await fetch(box.dataset.src, { headers: { "X-Requested-With": "fetch" }, credentials: "same-origin" });
        if (!resp.ok || resp.redirected) continue;
        const html = await resp.text();
        if (box.dataset.html !== html) { box.innerHTML = html; box.dataset.html = html; }
      } catch (e) { /* keep what is shown; the next refresh tries again */ }
      box.setAttribute("aria-busy", "false");
    }
  }
  const refreshLazy = debounce(loadLazy, 1500);

  function swapRegions(doc, skip) {
    let changed = [];
    for (const fresh of doc.querySelectorAll("[data-region]")) {
      const name = fresh.dataset.region;
      if (skip && skip(name, fresh)) continue;
      const current = document.querySelector(`[data-region="${name}"]`);
      if (!current || busy(current)) continue;
      const open = [...current.querySelectorAll("details[open][id]")].map((d) => d.id);
      if (current.innerHTML === fresh.innerHTML) continue;
      current.innerHTML = fresh.innerHTML;
      open.forEach((id) => { const d = document.getElementById(id); if (d) d.open = true; });
      changed.push(name);
    }
    return changed;
  }

  // The queue (and the home page's other regions) follow /ws/office/.
  const queueNote = () => document.getElementById("queue-live");
  const home = document.getElementById("workspace-home");
  const refreshHome = debounce(async () => {
    const doc = await fetchPage();
    if (!doc) return;
    const before = document.querySelectorAll(".q-item").length;
    swapRegions(doc, (name) => !home && name !== "queue");
    const after = document.querySelectorAll(".q-item").length;
    const region = document.getElementById("inbox-announce") || document.getElementById("ws-announce");
    if (region && after > before) region.textContent = "New items in the queue.";
    setLive(queueNote(), officeState);
  }, 250);
  let officeState = "connecting";
  // Supervisors are told, on whatever workspace page they have open, when an item of their
  // teams passes its SLA (it also moves to the top of everyone's queue, in red).
  function slaAlert() {
    const pane = document.querySelector('[data-region="queue"]');
    if (!pane || pane.dataset.supervisor !== "1") return;
    let box = document.getElementById("sla-alert");
    if (!box) {
      box = el("div", { id: "sla-alert", class: "notice notice-error", role: "alert" });
      pane.parentNode.insertBefore(box, pane);
    }
    box.textContent = "An item passed its SLA deadline and moved to the top of the queue.";
  }
  if (document.querySelector('[data-region="queue"]')) {
    window.TandemSocket("/ws/office/", {
      onEvent(ev) {
        if (ev.type === "queue.updated" || (home && (ev.type === "conversation.updated" || ev.type === "conversation.status"))) refreshHome();
        if (ev.type === "queue.updated" && ev.event === "sla_breached") slaAlert();
      },
      onOpen(isReconnect) { if (isReconnect) refreshHome(); },
      onState(state, detail) { officeState = state; setLive(queueNote(), state, detail); },
    });
    // Ages and SLA deadlines move on even when nothing happens.
    window.setInterval(refreshHome, 60000);
  }
  loadLazy();
  if (home) return;

  // ---------------------------------------------------------------------------------------
  // Conversation workspace
  // ---------------------------------------------------------------------------------------
  const ws = document.getElementById("workspace");
  if (!ws) return;
  // A form shown again with its errors answers a POST to another URL: go back to the page's
  // own URL, which the refreshes below fetch (and a reload then does not post again).
  if (ws.dataset.url && window.location.pathname !== ws.dataset.url) {
    window.history.replaceState(null, "", ws.dataset.url);
  }
  const note = document.getElementById("live-note");
  const typing = document.getElementById("ws-typing");
  const typingLabel = document.getElementById("ws-typing-label");
  let typingTimer = null;
  const live = new Map(); // turn id -> streaming <li>
  const inFlight = new Map(); // client id -> text

  function transcript() { return document.getElementById("transcript"); }

  function announce(text) {
    const region = document.getElementById("ws-announce");
    if (region) region.textContent = text;
  }

  function scrollTranscript(force) {
    const t = transcript();
    if (force || t.scrollHeight - t.scrollTop - t.clientHeight < 160) t.scrollTop = t.scrollHeight;
  }

  function showTyping(label, ms) {
    typingLabel.textContent = label;
    typing.hidden = false;
    window.clearTimeout(typingTimer);
    typingTimer = window.setTimeout(() => { typing.hidden = true; }, ms);
  }

  // --- composer --------------------------------------------------------------------------
  let sock = null;

  function agentError(text) {
    const box = document.getElementById("agent-error");
    if (!box) return;
    box.textContent = text || "";
    box.hidden = !text;
  }

  function bindComposer() {
    const form = document.getElementById("agent-form");
    if (!form || form.dataset.bound) return;
    form.dataset.bound = "1";
    const input = document.getElementById("agent-input");
    const button = document.getElementById("agent-send");
    let lastTyping = 0;
    form.addEventListener("submit", (ev) => {
      const text = input.value.trim();
      if (!text) { ev.preventDefault(); agentError("Write a reply first."); input.focus(); return; }
      if (!sock || !sock.isOpen()) return; // no live connection: the form posts as usual
      ev.preventDefault();
      const clientId = uuid();
      inFlight.set(clientId, text);
      sock.send({ type: "message.send", client_id: clientId, text });
      button.disabled = true;
      button.textContent = "Sending…";
      agentError("");
    });
    input.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && !ev.shiftKey && !ev.ctrlKey && !ev.altKey && !ev.metaKey && !ev.isComposing) {
        ev.preventDefault();
        form.requestSubmit();
      }
    });
    input.addEventListener("input", () => {
      const now = Date.now();
      if (sock && now - lastTyping > 3000) { lastTyping = now; sock.send({ type: "typing" }); }
    });
  }

  function composerDone(ok, message) {
    const input = document.getElementById("agent-input");
    const button = document.getElementById("agent-send");
    if (button) { button.disabled = false; button.textContent = "Send reply"; }
    if (!input) return;
    if (ok) { input.value = ""; input.focus(); agentError(""); }
    else agentError(message);
  }

  // --- refresh ---------------------------------------------------------------------------
  let refreshing = false;
  let again = false;
  async function refreshNow() {
    if (refreshing) { again = true; return; }
    refreshing = true;
    try {
      const doc = await fetchPage();
      if (!doc) return;
      const stick = (() => { const t = transcript(); return t.scrollHeight - t.scrollTop - t.clientHeight < 160; })();
      for (const fresh of doc.querySelectorAll("[data-region]")) {
        const name = fresh.dataset.region;
        const current = document.querySelector(`[data-region="${name}"]`);
        if (!current) continue;
        if (name === "composer") {
          if (current.dataset.key === fresh.dataset.key) continue;
          current.replaceWith(document.importNode(fresh, true));
          bindComposer();
          continue;
        }
        if (name !== "transcript" && busy(current)) continue;
        if (name === "queue") { setTimeout(() => setLive(queueNote(), officeState), 0); }
        const open = [...current.querySelectorAll("details[open][id]")].map((d) => d.id);
        if (current.innerHTML === fresh.innerHTML) continue;
        current.innerHTML = fresh.innerHTML;
        open.forEach((id) => { const d = document.getElementById(id); if (d) d.open = true; });
        if (name === "transcript") live.clear();
      }
      scrollTranscript(stick);
      refreshLazy();
      const title = doc.querySelector("title");
      if (title) document.title = title.textContent;
    } finally {
      refreshing = false;
      if (again) { again = false; refresh(); }
    }
  }
  const refresh = debounce(refreshNow, 150);

  // --- streaming -------------------------------------------------------------------------
  function liveItem(turnId) {
    let li = live.get(turnId);
    if (!li) {
      li = el("li", { class: "t-msg t-assistant live", "aria-hidden": "true" },
        el("div", { class: "who", text: "Assistant (AI) · writing…" }), el("div", { class: "bubble" }));
      transcript().append(li);
      live.set(turnId, li);
    }
    return li;
  }

  const conversationId = ws.dataset.conversation;
  sock = window.TandemSocket(`/ws/chat/${conversationId}/`, {
    onEvent(ev) {
      switch (ev.type) {
        case "message.new":
        case "conversation.status":
        case "sync":
          if (ev.type === "message.new" && ev.message) {
            if (ev.message.role !== "customer") typing.hidden = true;
            // The transcript is swapped as a whole, so it is not a live region; announce here.
            if (ev.message.role === "customer") announce(`Customer: ${ev.message.text}`);
          }
          if (ev.type === "conversation.status" && ev.label) announce(`Status: ${ev.label}`);
          refresh();
          break;
        case "assistant.typing":
          showTyping("The assistant is writing…", 30000);
          break;
        case "assistant.delta": {
          typing.hidden = true;
          const stick = (() => { const t = transcript(); return t.scrollHeight - t.scrollTop - t.clientHeight < 160; })();
          liveItem(ev.turn_id).querySelector(".bubble").textContent += ev.text || "";
          scrollTranscript(stick);
          break;
        }
        case "typing":
          if (ev.role === "customer") showTyping("The customer is typing…", 5000);
          break;
        case "message.ack":
          if (inFlight.delete(ev.client_id)) composerDone(true);
          refresh();
          break;
        case "error":
          if (ev.client_id && inFlight.has(ev.client_id)) {
            inFlight.delete(ev.client_id);
            composerDone(false, ev.message);
          } else {
            composerDone(false, ev.message);
          }
          break;
        default:
          break;
      }
    },
    onOpen(isReconnect) { if (isReconnect) refresh(); },
    onState(state, detail) { setLive(note, state, detail); },
  });

  // --- curated answer form -----------------------------------------------------------------
  // Whether a new answer goes live at once depends on the chosen collection.
  document.addEventListener("change", (ev) => {
    if (ev.target.id !== "curated-collection") return;
    const note = document.getElementById("curated-note");
    const option = ev.target.selectedOptions[0];
    if (!note || !option) return;
    note.textContent = (option.dataset.internal === "yes" ? note.dataset.internal + " " : "")
      + (option.dataset.publish === "yes" ? note.dataset.live : note.dataset.wait);
  });

  // --- canned responses ---------------------------------------------------------------------
  // The list is fetched once per page (rendered for this conversation); choosing one puts its
  // text in the composer for the agent to adjust. "/shortcut" typed alone in the composer
  // opens the list filtered to it.
  let canned = null;
  async function cannedLoad() {
    const box = document.getElementById("canned");
    if (!box) return [];
    if (canned) return canned;
    try {
      const resp = await fetch(box.dataset.src, { credentials: "same-origin" });
      canned = resp.ok ? (await resp.json()).responses : [];
    } catch (e) { canned = []; }
    return canned;
  }
  function cannedRender(filter) {
    const list = document.getElementById("canned-list");
    if (!list) return;
    const f = (filter || "").toLowerCase().replace(/^\//, "");
    const rows = (canned || []).filter((r) => !f || r.title.toLowerCase().includes(f) || r.shortcut.includes(f));
    list.replaceChildren(...(rows.length ? rows.map((r) => {
      const button = el("button", { type: "button", class: "canned-item" },
        el("strong", { text: r.title }), el("span", { class: "muted small", text: ` /${r.shortcut}` }),
        el("span", { class: "canned-text small", text: r.text }));
      button.addEventListener("click", () => cannedUse(r));
      return el("li", {}, button);
    }) : [el("li", { class: "muted small", text: canned && canned.length ? "No match." : "No canned responses for your teams yet." })]));
  }
  function cannedUse(r) {
    const input = document.getElementById("agent-input");
    const box = document.getElementById("canned");
    if (!input) return;
    input.value = /^\/\S*$/.test(input.value.trim()) || !input.value.trim() ? r.text : `${input.value.trimEnd()} ${r.text}`;
    if (box) box.open = false;
    input.focus();
    input.setSelectionRange(input.value.length, input.value.length);
  }
  document.addEventListener("toggle", async (ev) => {
    if (ev.target.id !== "canned" || !ev.target.open) return;
    await cannedLoad();
    const filter = document.getElementById("canned-filter");
    const input = document.getElementById("agent-input");
    if (filter && input && /^\/\S*$/.test(input.value.trim())) filter.value = input.value.trim().slice(1);
    cannedRender(filter ? filter.value : "");
    if (filter) filter.focus();
  }, true);
  document.addEventListener("input", (ev) => {
    if (ev.target.id === "canned-filter") cannedRender(ev.target.value);
    if (ev.target.id === "agent-input" && ev.target.value === "/") {
      const box = document.getElementById("canned");
      if (box) box.open = true;
    }
  });
  document.addEventListener("keydown", (ev) => {
    if (ev.target.id === "canned-filter" && ev.key === "Enter") {
      ev.preventDefault();
      const first = document.querySelector("#canned-list .canned-item");
      if (first) first.click();
    }
    if (ev.key === "Escape" && document.getElementById("canned")?.open) {
      document.getElementById("canned").open = false;
      document.getElementById("agent-input")?.focus();
    }
  });

  // Choosing another action fills in its parameters' names, unless the agent typed some.
  document.addEventListener("change", (ev) => {
    if (ev.target.id !== "propose-action-name") return;
    const box = document.getElementById("propose-params");
    const option = ev.target.selectedOptions[0];
    if (box && option && (box.value === box.defaultValue || !box.value.trim())) {
      box.value = option.dataset.template; box.defaultValue = option.dataset.template;
    }
  });

  bindComposer();
  scrollTranscript(true);
})();
