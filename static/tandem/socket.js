/* A WebSocket that reconnects with exponential backoff and jitter.
 *
 *   const sock = TandemSocket("/ws/chat/<id>/?token=…", {
 *     onOpen(isReconnect) {}, onEvent(event) {}, onState("connecting" | "open" | "closed", detail) {},
 *   });
 *   sock.send({type: "…"}) -> true when handed to an open socket
 *
 * Close codes 4403 (forbidden) and 4404 (not found) are final: retrying cannot help.
 */
(function () {
  "use strict";

  const FINAL_CODES = new Set([4403, 4404]);

  function wsUrl(path) {
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    return scheme + "//" + window.location.host + path;
  }

  window.TandemSocket = function (path, handlers) {
    const h = Object.assign({ onOpen() {}, onEvent() {}, onState() {} }, handlers || {});
    let ws = null;
    let attempt = 0;
    let opened = false;
    let timer = null;
    let stopped = false;

    function connect() {
      timer = null;
      h.onState("connecting", { attempt });
      try {
        ws = new WebSocket(wsUrl(path));
      } catch (err) {
        schedule();
        return;
      }
      ws.addEventListener("open", () => {
        attempt = 0;
        h.onState("open", {});
        h.onOpen(opened);
        opened = true;
      });
      ws.addEventListener("message", (msg) => {
        let event;
        try { event = JSON.parse(msg.data); } catch (err) { return; }
        if (event && typeof event === "object") h.onEvent(event);
      });
      ws.addEventListener("close", (ev) => {
        ws = null;
        if (stopped) return;
        if (FINAL_CODES.has(ev.code)) {
          h.onState("closed", { code: ev.code, final: true });
          return;
        }
        schedule();
      });
    }

    function schedule() {
      if (stopped || timer) return;
      attempt += 1;
      const base = Math.min(15000, 500 * Math.pow(2, attempt - 1));
      const delay = base / 2 + Math.random() * base / 2;
      h.onState("connecting", { attempt, retryIn: delay });
      timer = window.setTimeout(connect, delay);
    }

    // Reconnect at once when the tab comes back or the network returns.
    function nudge() {
      if (!stopped && !ws && timer) {
        window.clearTimeout(timer);
        connect();
      }
    }
    window.addEventListener("online", nudge);
    document.addEventListener("visibilitychange", () => { if (!document.hidden) nudge(); });

    connect();
    return {
      send(obj) {
        if (!ws || ws.readyState !== WebSocket.OPEN) return false;
        ws.send(JSON.stringify(obj));
        return true;
      },
      isOpen() { return !!ws && ws.readyState === WebSocket.OPEN; },
      close() { stopped = true; if (timer) window.clearTimeout(timer); if (ws) ws.close(); },
    };
  };

  /* Shared helpers. */
  window.Tandem = {
    uuid() {
      if (window.crypto && typeof window.crypto.randomUUID === "function") return window.crypto.randomUUID();
      const b = new Uint8Array(16);
      window.crypto.getRandomValues(b);
      b[6] = (b[6] & 0x0f) | 0x40;
      b[8] = (b[8] & 0x3f) | 0x80;
      const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
      return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
    },
    /* The same rule as django.utils.text.slugify, so citations can link to a section heading. */
    slugify(value) {
      return String(value || "").normalize("NFKD").replace(/[^\x00-\x7F]/g, "")
        .toLowerCase().replace(/[^\w\s-]/g, "").replace(/[-\s]+/g, "-").replace(/^[-_]+|[-_]+$/g, "");
    },
    time(iso) {
      const d = iso ? new Date(iso) : new Date();
      if (isNaN(d)) return "";
      return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    },
    el(tag, attrs, ...children) {
      const node = document.createElement(tag);
      for (const [k, v] of Object.entries(attrs || {})) {
        if (v === null || v === undefined || v === false) continue;
        if (k === "class") node.className = v;
        else if (k === "text") node.textContent = v;
        else if (k.startsWith("data-") || k.startsWith("aria-") || k === "role" || k === "href" || k === "target"
                 || k === "rel" || k === "datetime" || k === "id" || k === "title") node.setAttribute(k, v);
        else node[k] = v;
      }
      for (const c of children) {
        if (c === null || c === undefined || c === false) continue;
        node.append(c instanceof Node ? c : document.createTextNode(String(c)));
      }
      return node;
    },
  };
})();
