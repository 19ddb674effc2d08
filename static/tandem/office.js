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
  // Inbox
  // ---------------------------------------------------------------------------------------
  const inbox = document.getElementById("inbox-live");
  if (inbox) {
    const note = document.getElementById("live-note");
    const announce = document.getElementById("inbox-announce");
    const refresh = debounce(async () => {
      const doc = await fetchPage();
      const fresh = doc && doc.getElementById("inbox-live");
      if (!fresh || fresh.innerHTML === inbox.innerHTML) return;
      const before = inbox.querySelectorAll(".queue-item").length;
      inbox.innerHTML = fresh.innerHTML;
      const after = inbox.querySelectorAll(".queue-item").length;
      if (after > before) announce.textContent = "The inbox has new items.";
    }, 250);
    window.TandemSocket("/ws/office/", {
      onEvent(ev) {
        if (ev.type === "queue.updated" || ev.type === "conversation.updated" || ev.type === "conversation.status") refresh();
      },
      onOpen(isReconnect) { if (isReconnect) refresh(); },
      onState(state, detail) { setLive(note, state, detail); },
    });
    // Ages and SLA deadlines move on even when nothing happens.
    window.setInterval(refresh, 60000);
    return;
  }

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
        const open = [...current.querySelectorAll("details[open][id]")].map((d) => d.id);
        if (current.innerHTML === fresh.innerHTML) continue;
        current.innerHTML = fresh.innerHTML;
        open.forEach((id) => { const d = document.getElementById(id); if (d) d.open = true; });
        if (name === "transcript") live.clear();
      }
      scrollTranscript(stick);
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

  bindComposer();
  scrollTranscript(true);
})();
