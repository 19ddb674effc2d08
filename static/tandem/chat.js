/* The customer chat: renders messages by sequence number, streams the assistant's reply,
 * keeps unsent text safe, and resynchronises after a reconnect. Needs socket.js. */
(function () {
  "use strict";

  const card = document.querySelector(".chat-card");
  if (!card) return;
  const { el, time, uuid, slugify } = window.Tandem;

  const conversationId = card.dataset.conversation;
  const token = card.dataset.token;
  const MAX = parseInt(card.dataset.maxChars, 10) || 2000;

  const log = document.getElementById("chat-log");
  const list = document.getElementById("messages");
  const typing = document.getElementById("typing");
  const typingLabel = document.getElementById("typing-label");
  const strip = document.getElementById("status-strip");
  const conn = document.getElementById("conn");
  const composer = document.getElementById("composer");
  const closedBox = document.getElementById("closed-box");
  const form = document.getElementById("chat-form");
  const input = document.getElementById("chat-input");
  const counter = document.getElementById("chat-counter");
  const errorBox = document.getElementById("composer-error");
  const quick = document.getElementById("quick");
  const askPerson = document.getElementById("ask-person");

  const byId = new Map();        // message id -> element
  const live = new Map();        // turn id -> streaming element
  const pending = new Map();     // client id -> {text, fromBox, el}
  let lastSeq = 0;
  let status = card.dataset.status || "bot";
  let typingTimer = null;
  let lastTypingSent = 0;
  let csatSending = false;       // a survey answer is waiting for csat.ack or an error

  // --- rendering -----------------------------------------------------------------------------

  const BADGES = {
    action_pending: ["chip chip-warning", "Sent for approval"],
    action_failed: ["chip chip-danger", "Not completed"],
    action_rejected: ["chip chip-danger", "Not approved"],
    action_expired: ["chip chip-danger", "Not reviewed in time"],
  };

  function whoLabel(m) {
    if (m.role === "customer") return "You";
    if (m.role === "agent") return `${m.author || "Our team"} · Brightwater team`;
    if (m.role === "assistant") return "Assistant (AI)";
    return "";
  }

  function sourceLink(s) {
    const label = s.section && s.section !== s.title ? `${s.title} — ${s.section}` : s.title;
    let href = s.url || "";
    if (href && s.section && href.indexOf("#") === -1) href += "#" + slugify(s.section);
    const text = [el("span", { class: "n", text: `[${s.n}]` }), " ", label];
    return el("li", {}, href
      ? el("a", { href, target: "_blank", rel: "noopener" }, ...text,
           el("span", { class: "visually-hidden", text: " (opens in a new tab)" }))
      : el("span", {}, ...text));
  }

  // --- satisfaction survey (posted when the conversation is closed) ------------------------

  const CSAT_LABELS = ["very poor", "poor", "okay", "good", "excellent"];
  const CSAT_COMMENT_MAX = 1000;

  function csatThanks(text) {
    // Focusable so focus can move here when the form it replaces goes away.
    return el("p", { class: "csat-thanks", tabIndex: -1, text: text || "Thanks for your feedback!" });
  }

  function csatError(box, text) {
    const node = box.querySelector(".csat-error");
    if (!node) return;
    node.textContent = text;
    node.hidden = !text;
  }

  function renderSurvey(m) {
    const box = el("div", { class: "csat" });
    if (m.csat && m.csat.answered) {
      box.append(csatThanks());
      return box;
    }
    const name = `csat-${m.id}`;
    const scale = el("fieldset", { class: "csat-scale" }, el("legend", { class: "visually-hidden", text: "Your rating" }));
    const options = el("div", { class: "csat-options" });
    CSAT_LABELS.forEach((label, i) => {
      const n = i + 1;
      const id = `${name}-${n}`;
      options.append(
        el("input", { type: "radio", name, value: String(n), id, class: "csat-radio",
                      "aria-label": `${n} of 5 – ${label}` }),
        el("label", { htmlFor: id, class: "csat-option", "aria-hidden": "true", text: String(n) }));
    });
    scale.append(options, el("div", { class: "csat-ends", "aria-hidden": "true" },
      el("span", { text: "Very poor" }), el("span", { text: "Excellent" })));
    const commentId = `${name}-comment`;
    const comment = el("textarea", { id: commentId, name: "comment", rows: 2, maxLength: CSAT_COMMENT_MAX,
                                      class: "csat-comment" });
    const submit = el("button", { type: "submit", class: "btn btn-primary btn-sm", text: "Send feedback" });
    const form = el("form", { class: "csat-form", noValidate: true },
      scale,
      el("label", { htmlFor: commentId, class: "csat-comment-label", text: "Anything you'd like to add? (optional)" }),
      comment,
      el("p", { class: "csat-error", role: "alert", hidden: true }),
      el("div", { class: "csat-actions" }, submit));
    form.addEventListener("change", () => csatError(box, ""));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const picked = form.querySelector("input.csat-radio:checked");
      if (!picked) {
        csatError(box, "Please choose a rating from 1 (very poor) to 5 (excellent).");
        form.querySelector("input.csat-radio").focus();
        return;
      }
      if (comment.value.trim().length > CSAT_COMMENT_MAX) {
        csatError(box, `Your comment is too long; the limit is ${CSAT_COMMENT_MAX} characters.`);
        comment.focus();
        return;
      }
      if (!sock.send({ type: "csat.submit", score: parseInt(picked.value, 10), comment: comment.value })) {
        csatError(box, "You're offline at the moment. We're reconnecting — please try again in a moment.");
        return;
      }
      csatError(box, "");
      csatSending = true;
      submit.disabled = true;
      submit.textContent = "Sending…";
    });
    box.append(form);
    return box;
  }

  function openSurvey() {
    const forms = list.querySelectorAll(".kind-csat_request .csat-form");
    return forms.length ? forms[forms.length - 1].closest(".csat") : null;
  }

  // Replace the survey's form with a thank-you, keeping keyboard focus in place.
  function csatDone(text) {
    const box = openSurvey();
    if (!box) return;
    const thanks = csatThanks(text);
    const hadFocus = box.contains(document.activeElement);
    box.replaceChildren(thanks);
    if (hadFocus) thanks.focus();
  }

  function csatFailed(ev) {
    csatSending = false;
    if (ev.code === "csat_already_submitted") {
      csatDone(ev.message);
      return;
    }
    const box = openSurvey();
    if (!box) {
      showError(ev.message || "Something went wrong. Please try again.");
      return;
    }
    const submit = box.querySelector("button[type=submit]");
    if (submit) {
      submit.disabled = false;
      submit.textContent = "Send feedback";
    }
    csatError(box, ev.message || "Something went wrong. Please try again.");
  }

  function renderMessage(m) {
    const kind = m.kind || "text";
    const node = el("div", {
      class: `msg msg-${m.role} kind-${kind}`, "data-id": m.id, "data-seq": m.seq, "data-role": m.role,
      "data-author": m.author || "",
    });
    const who = whoLabel(m);
    if (who) {
      node.append(el("div", { class: "who" }, who, " ",
        el("time", { datetime: m.created_at, text: `· ${time(m.created_at)}` })));
    }
    node.append(el("div", { class: "bubble", text: m.text }));
    if (kind === "csat_request") node.append(renderSurvey(m));
    if (BADGES[kind]) node.append(el("span", { class: BADGES[kind][0] + " badge", text: BADGES[kind][1] }));
    if (m.role === "assistant" && Array.isArray(m.sources) && m.sources.length) {
      const ol = el("ul", { class: "sources", "aria-label": "Sources" });
      m.sources.forEach((s) => ol.append(sourceLink(s)));
      node.append(ol);
    }
    return node;
  }

  function nearBottom() {
    return log.scrollHeight - log.scrollTop - log.clientHeight < 140;
  }

  // Follow the conversation while the reader is at the bottom; leave them alone when they
  // scrolled up to read something. Layout changes (status strip, error box, a growing
  // textarea, streamed text) keep the bottom in view too.
  let stuck = true;
  log.addEventListener("scroll", () => { stuck = nearBottom(); }, { passive: true });
  if (window.ResizeObserver) {
    const follow = new ResizeObserver(() => { if (stuck) log.scrollTop = log.scrollHeight; });
    follow.observe(log);
    follow.observe(list);
  }

  function scrollDown(force) {
    if (force || stuck || nearBottom()) {
      log.scrollTop = log.scrollHeight;
      stuck = true;
    }
  }

  // Hide the "who" line of consecutive messages from the same speaker.
  function regroup() {
    let prev = null;
    for (const node of list.children) {
      const same = prev && prev.dataset.role === node.dataset.role && prev.dataset.author === node.dataset.author
        && node.dataset.role !== "system";
      node.classList.toggle("cont", !!same);
      const who = node.querySelector(".who");
      if (who) who.hidden = !!same;
      prev = node;
    }
  }

  function insertBySeq(node, seq) {
    for (const child of list.children) {
      const s = parseInt(child.dataset.seq, 10);
      if (!isNaN(s) && s > seq) { list.insertBefore(node, child); return; }
    }
    list.append(node);
  }

  function upsert(m) {
    if (!m || !m.id) return;
    const stick = nearBottom();
    if (m.turn_id && live.has(m.turn_id)) {
      live.get(m.turn_id).remove();
      live.delete(m.turn_id);
    }
    const sig = JSON.stringify([m.text, m.kind, m.author, m.sources, m.csat]);
    const existing = byId.get(m.id);
    // The same message arrives more than once (ack, broadcast, sync); re-inserting it would
    // make screen readers announce it again.
    if (existing && existing.dataset.sig === sig) {
      lastSeq = Math.max(lastSeq, m.seq || 0);
      return;
    }
    const node = renderMessage(m);
    node.dataset.sig = sig;
    const hadFocus = existing && existing.contains(document.activeElement);
    if (existing) existing.replaceWith(node);
    else insertBySeq(node, m.seq);
    if (hadFocus) {
      const target = node.querySelector(".csat-thanks");
      if (target) target.focus();
    }
    byId.set(m.id, node);
    lastSeq = Math.max(lastSeq, m.seq || 0);
    if (m.role === "assistant" || m.role === "agent" || (m.role === "system" && m.turn_id)) hideTyping();
    if (m.role === "agent" && m.author && card.dataset.agentName !== m.author) {
      card.dataset.agentName = m.author;
      if (status === "human") setStatus(status);
    }
    regroup();
    // Messages the customer just sent stay pending bubbles until acknowledged; keep them last.
    for (const p of pending.values()) list.append(p.el);
    scrollDown(stick);
  }

  function liveBubble(turnId) {
    let node = live.get(turnId);
    if (!node) {
      // Hidden from screen readers: the finished message is announced once, as a whole.
      node = el("div", { class: "msg msg-assistant live", "data-role": "assistant", "data-author": "", "aria-hidden": "true" },
        el("div", { class: "who", text: "Assistant (AI)" }), el("div", { class: "bubble" }));
      list.append(node);
      live.set(turnId, node);
      regroup();
    }
    return node;
  }

  function showTyping(label, ms) {
    typingLabel.textContent = label;
    typing.hidden = false;
    scrollDown();
    window.clearTimeout(typingTimer);
    typingTimer = window.setTimeout(hideTyping, ms);
  }

  function hideTyping() {
    typing.hidden = true;
    window.clearTimeout(typingTimer);
  }

  // --- status -------------------------------------------------------------------------------

  function setStatus(next) {
    status = next || status;
    card.dataset.status = status;
    strip.dataset.status = status;
    strip.replaceChildren();
    if (status === "handoff") {
      strip.append(el("span", { class: "pulse", "aria-hidden": "true" }),
        el("span", {}, el("strong", { text: "A person from our team is on the way." }),
          " Keep writing if you like — they'll see the whole conversation."));
    } else if (status === "human") {
      const name = card.dataset.agentName;
      strip.append(el("span", { class: "pulse", "aria-hidden": "true" }),
        el("span", {}, el("strong", { text: name ? `You're chatting with ${name} from our team.` : "A person from our team has joined." }),
          " The assistant is paused."));
    } else if (status === "closed") {
      strip.append(el("strong", { text: "This conversation is closed." }));
    }
    strip.hidden = !(status === "handoff" || status === "human" || status === "closed");
    quick.hidden = status !== "bot";
    const closed = status === "closed";
    composer.hidden = closed;
    closedBox.hidden = !closed;
    if (closed) hideTyping();
    scrollDown();
  }

  // --- composer -----------------------------------------------------------------------------

  function showError(text, code) {
    errorBox.textContent = text;
    errorBox.dataset.code = code || "";
    errorBox.hidden = false;
  }

  function clearError() {
    errorBox.hidden = true;
    errorBox.textContent = "";
  }

  function updateCounter() {
    const n = input.value.trim().length;
    counter.textContent = `${n} / ${MAX}`;
    counter.dataset.level = n > MAX ? "over" : n > MAX * 0.9 ? "warn" : "ok";
    input.setAttribute("aria-invalid", n > MAX ? "true" : "false");
    input.style.height = "auto";
    input.style.height = Math.min(input.scrollHeight + 2, 192) + "px";
  }

  function restore(text) {
    // Never lose what the customer wrote: put it back, ahead of anything typed since.
    const current = input.value;
    input.value = current.trim() ? `${text}\n${current}` : text;
    updateCounter();
  }

  function send(text, fromBox) {
    const body = text.trim();
    if (!body) return;
    if (status === "closed") {
      showError("This conversation is closed. Start a new one to keep chatting.");
      return;
    }
    if (body.length > MAX) {
      showError(`Your message is too long (${body.length} characters); the limit is ${MAX}. Please shorten it.`, "length");
      input.focus();
      return;
    }
    const clientId = uuid();
    if (!sock.send({ type: "message.send", client_id: clientId, text: body })) {
      showError("You're offline at the moment. We're reconnecting — your message is still here.", "offline");
      return;
    }
    clearError();
    const node = renderMessage({ id: "", seq: Infinity, role: "customer", text: body, created_at: new Date().toISOString() });
    node.classList.add("pending");
    node.setAttribute("aria-hidden", "true");
    node.querySelector("time").textContent = "· Sending…";
    list.append(node);
    pending.set(clientId, { text: body, fromBox, el: node });
    regroup();
    if (fromBox) {
      input.value = "";
      updateCounter();
    }
    scrollDown(true);
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    send(input.value, true);
  });

  input.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.ctrlKey && !ev.altKey && !ev.metaKey && !ev.isComposing) {
      ev.preventDefault();
      send(input.value, true);
    }
  });

  input.addEventListener("input", () => {
    updateCounter();
    if (!errorBox.hidden && errorBox.dataset.code === "length" && input.value.trim().length <= MAX) clearError();
    const now = Date.now();
    if ((status === "human" || status === "handoff") && now - lastTypingSent > 3000) {
      lastTypingSent = now;
      sock.send({ type: "typing" });
    }
  });

  askPerson.addEventListener("click", () => send(askPerson.dataset.text, false));

  // --- socket -------------------------------------------------------------------------------

  function onEvent(ev) {
    switch (ev.type) {
      case "message.ack": {
        const p = pending.get(ev.client_id);
        if (p) { p.el.remove(); pending.delete(ev.client_id); }
        upsert(ev.message);
        // Expect a reply, unless it already arrived (events may overtake the acknowledgement).
        if (status === "bot" && ev.message && ev.message.role === "customer" && !ev.duplicate
            && lastSeq <= ev.message.seq) {
          showTyping("The assistant is writing…", 30000);
        }
        break;
      }
      case "message.new":
        upsert(ev.message);
        break;
      case "sync":
        (ev.messages || []).forEach(upsert);
        break;
      case "assistant.typing":
        showTyping("The assistant is writing…", 30000);
        break;
      case "assistant.delta": {
        hideTyping();
        const stick = nearBottom();
        const node = liveBubble(ev.turn_id);
        node.querySelector(".bubble").textContent += ev.text || "";
        scrollDown(stick);
        break;
      }
      case "typing":
        if (ev.role === "agent") showTyping(`${card.dataset.agentName || "Our team"} is typing…`, 5000);
        break;
      case "conversation.status":
        setStatus(ev.status);
        break;
      case "csat.ack":
        csatSending = false;
        csatDone();
        break;
      case "error": {
        if (csatSending || (ev.code || "").startsWith("csat_")) {
          csatFailed(ev);
          break;
        }
        const p = ev.client_id ? pending.get(ev.client_id) : null;
        if (p) {
          p.el.remove();
          pending.delete(ev.client_id);
          regroup();
          if (p.fromBox) restore(p.text);
        }
        if (ev.code === "conversation_closed") setStatus("closed");
        showError(ev.message || "Something went wrong. Please try again.");
        if (p && p.fromBox) input.focus();
        break;
      }
      default:
        break;
    }
  }

  const CONN_TEXT = { open: "Connected", connecting: "Connecting…", closed: "Disconnected" };
  const sock = window.TandemSocket(
    // Signed tokens are URL-safe already (base64url, ":" and "."), and the consumer reads the
    // query string without percent-decoding, so the token is passed as it is.
    `/ws/chat/${conversationId}/?token=${token}`,
    {
      onEvent,
      onOpen() {
        sock.send({ type: "sync", after_seq: lastSeq });
        // Re-send what was in flight when the connection dropped; the client id makes it safe.
        for (const [clientId, p] of pending) sock.send({ type: "message.send", client_id: clientId, text: p.text });
      },
      onState(state, detail) {
        conn.dataset.state = state;
        if (state === "open" && errorBox.dataset.code === "offline") clearError();
        conn.textContent = state === "connecting" && detail.attempt ? "Reconnecting…" : CONN_TEXT[state];
        if (state === "closed" && detail.final) {
          showError("This chat can't be reached any more. Please reload the page to continue.");
        }
      },
    },
  );

  // --- start --------------------------------------------------------------------------------

  const initial = JSON.parse(document.getElementById("initial-messages").textContent || "[]");
  initial.forEach(upsert);
  setStatus(status);
  updateCounter();
  scrollDown(true);
  // Only what arrives from now on is announced, not the history rendered at load.
  window.setTimeout(() => log.setAttribute("aria-live", "polite"), 0);
})();
