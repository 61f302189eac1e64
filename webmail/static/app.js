// webmail: progressive enhancement only; every page works without this file.
"use strict";
(function () {
  const $ = (s, r) => (r || document).querySelector(s);
  const $$ = (s, r) => Array.from((r || document).querySelectorAll(s));

  // Confirm destructive buttons.
  document.addEventListener("click", (e) => {
    const b = e.target.closest("[data-confirm]");
    if (b && !window.confirm(b.getAttribute("data-confirm"))) e.preventDefault();
  });

  // Mark the message read when the reader page could not tell where its GET came from (no Fetch Metadata).
  const markSeen = $("#mark-seen");
  if (markSeen) fetch(markSeen.action, { method: "POST", body: new URLSearchParams(new FormData(markSeen)),
                                         credentials: "same-origin", redirect: "manual" }).catch(() => {});

  // Select all.
  document.addEventListener("change", (e) => {
    if (e.target.id === "select-all") $$("#message-list input[name=uid]").forEach((c) => { c.checked = e.target.checked; });
  });

  // Click anywhere on a row opens the message.
  document.addEventListener("click", (e) => {
    const row = e.target.closest("tr.msg");
    if (!row || e.target.closest("a,input,button,label")) return;
    window.location = row.getAttribute("data-href");
  });

  // Message body frames grow to their content (same origin, no scripts inside the frame).
  function fit(frame) {
    try {
      const doc = frame.contentDocument;
      if (doc && doc.documentElement) frame.style.height = (doc.documentElement.scrollHeight + 24) + "px";
    } catch (err) { /* keep the fixed height */ }
  }
  $$("iframe.htmlbody").forEach((f) => { f.addEventListener("load", () => fit(f)); fit(f); });

  // Keyboard: j/k move, o/Enter open, x select, / search, c compose, r reply, a reply all, f forward, # delete.
  let focus = -1;
  function rows() { return $$("#message-list tr.msg"); }
  function setFocus(i) {
    const r = rows(); if (!r.length) return;
    focus = Math.max(0, Math.min(r.length - 1, i));
    r.forEach((x) => x.classList.remove("focused"));
    r[focus].classList.add("focused"); r[focus].scrollIntoView({ block: "nearest" });
  }
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable)) return;
    const r = rows();
    const go = (sel) => { const a = $(sel); if (a) { e.preventDefault(); window.location = a.href; } };
    switch (e.key) {
      case "j": setFocus(focus + 1); break;
      case "k": setFocus(focus - 1); break;
      case "o": case "Enter": if (focus >= 0 && r[focus]) window.location = r[focus].getAttribute("data-href"); break;
      case "x": if (focus >= 0 && r[focus]) { const c = $("input[name=uid]", r[focus]); if (c) c.checked = !c.checked; } break;
      case "/": e.preventDefault(); $("#search-box") && $("#search-box").focus(); break;
      case "c": go("a[accesskey=c]"); break;
      case "r": go("#reply"); break;
      case "a": go("#reply-all"); break;
      case "f": go("#forward"); break;
      case "#": { const d = $("#delete"); if (d) { e.preventDefault(); d.click(); } break; }
      default: return;
    }
  });

  // Live updates from the server's change events.
  if (!window.EventSource || !$("#live")) return;
  let pending = null;
  async function refresh() {
    pending = null;
    try {
      const res = await fetch(window.location.href, { credentials: "same-origin", headers: { "X-Live": "1" } });
      if (!res.ok || res.redirected) return;
      const doc = new DOMParser().parseFromString(await res.text(), "text/html");
      const folders = $("#folders"), newFolders = $("#folders", doc);
      if (folders && newFolders) folders.innerHTML = newFolders.innerHTML;
      const list = $("#message-list"), newList = $("#message-list", doc);
      if (list && newList) {
        const checked = new Set($$("input[name=uid]:checked", list).map((c) => c.value));
        list.innerHTML = newList.innerHTML;
        $$("input[name=uid]", list).forEach((c) => { if (checked.has(c.value)) c.checked = true; });
        if (focus >= 0) setFocus(focus);
      }
      document.dispatchEvent(new CustomEvent("webmail:refreshed"));
    } catch (err) { /* next event retries */ }
  }
  const reader = !!$("#reader"), composing = !!$("#compose-form");
  const es = new EventSource("/events");
  es.addEventListener("change", () => {
    if (composing || reader) {
      // Only the folder counts change under a reader or an open compose form.
      if (!pending) pending = setTimeout(async () => {
        pending = null;
        try {
          const res = await fetch("/api/folders", { credentials: "same-origin" });
          if (!res.ok) return;
          const data = await res.json();
          data.forEach((f) => {
            const a = $(`#folders a[data-mailbox="${f.id}"]`); if (!a) return;
            let c = $(".count", a);
            if (f.unseen && !c) { c = document.createElement("span"); c.className = "count"; a.appendChild(c); }
            if (c) { if (f.unseen) c.textContent = String(f.unseen); else c.remove(); }
          });
        } catch (err) { /* ignore */ }
      }, 150);
      return;
    }
    if (!pending) pending = setTimeout(refresh, 150);
  });
  // Filters: the header-name box only for "header" conditions, the comparisons that fit the field.
  function fitCondition(row) {
    const field = $("select[name$=_field]", row);
    if (!field) return;
    const size = field.value === "size";
    const header = $("input[name$=_header]", row);
    if (header) header.hidden = field.value !== "header";
    const op = $("select[name$=_op]", row);
    if (!op) return;
    Array.from(op.options).forEach((o) => { o.hidden = size !== (o.value === "over" || o.value === "under"); });
    if (op.selectedOptions[0] && op.selectedOptions[0].hidden) op.value = size ? "over" : "contains";
  }
  $$(".filters .cond").forEach(fitCondition);
  document.addEventListener("change", (e) => {
    const row = e.target.closest(".filters .cond");
    if (row && e.target.matches("select[name$=_field]")) fitCondition(row);
  });
  // Raw Sieve: put the cursor on the line the error names.
  const script = $("textarea[data-error-line]");
  if (script) {
    const line = parseInt(script.getAttribute("data-error-line"), 10);
    const lines = script.value.split("\n");
    const at = lines.slice(0, Math.max(0, line - 1)).reduce((n, l) => n + l.length + 1, 0);
    script.focus();
    script.setSelectionRange(at, at + (lines[line - 1] || "").length);
  }
})();
