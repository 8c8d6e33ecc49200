/*
 * Concierge chat widget. One tag on any page, no build step:
 *
 *   <script src="https://YOUR-SERVER/widget.js" data-org="acme"
 *           data-assistant="acme-support" defer></script>
 *
 * Optional attributes: data-title (header text), data-open="true" (start open),
 * data-position="left" (launcher on the left). Everything lives in a shadow root, so the
 * host page's styles cannot break it and it cannot break theirs.
 */
(function () {
  "use strict";
  var tag = document.currentScript;
  if (!tag || window.__conciergeWidget) return;
  window.__conciergeWidget = true;

  var base = new URL(tag.src, location.href).origin;
  var org = tag.getAttribute("data-org");
  var assistant = tag.getAttribute("data-assistant");
  var title = tag.getAttribute("data-title") || "Chat with us";
  var left = tag.getAttribute("data-position") === "left";
  if (!org || !assistant) {
    console.error("Concierge widget: data-org and data-assistant are required");
    return;
  }
  var api = base + "/widget/v1/" + encodeURIComponent(org) + "/" + encodeURIComponent(assistant);
  var storeKey = "concierge:" + base + ":" + org + ":" + assistant;
  var POLL_MS = 3000;
  var IDLE_POLL_MS = 10000;  // the server's widget_poll_seconds replaces it

  var CSS = [
    ":host{all:initial}",
    "*{box-sizing:border-box;font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif}",
    ".launcher{position:fixed;bottom:20px;" + (left ? "left" : "right") + ":20px;z-index:2147483000;",
    "width:60px;height:60px;border-radius:50%;border:none;background:#1f4fd1;color:#fff;cursor:pointer;",
    "box-shadow:0 6px 20px rgba(0,0,0,.25);display:flex;align-items:center;justify-content:center}",
    ".launcher:focus-visible,button:focus-visible,textarea:focus-visible,a:focus-visible{outline:3px solid #f5a623;outline-offset:2px}",
    ".launcher svg{width:28px;height:28px;fill:currentColor}",
    ".panel{position:fixed;bottom:92px;" + (left ? "left" : "right") + ":20px;z-index:2147483001;width:380px;",
    "max-width:calc(100vw - 40px);height:600px;max-height:calc(100vh - 120px);background:#fff;color:#1b1b1f;",
    "border-radius:14px;box-shadow:0 12px 40px rgba(0,0,0,.28);display:flex;flex-direction:column;overflow:hidden}",
    ".panel[hidden]{display:none}",
    "header{background:#1f4fd1;color:#fff;padding:12px 14px;display:flex;align-items:center;gap:8px}",
    "header h2{font-size:16px;margin:0;flex:1;font-weight:600}",
    "header button{background:transparent;border:none;color:#fff;font-size:22px;line-height:1;cursor:pointer;",
    "width:36px;height:36px;border-radius:8px}",
    ".disclosure{margin:0;background:#eef2fd;color:#243b7a;font-size:12.5px;padding:8px 14px;border-bottom:1px solid #dbe3fb}",
    ".consent{margin:0;background:#f6f7f9;color:#2b2f38;font-size:12.5px;padding:8px 14px;border-bottom:1px solid #e3e5ea;",
    "display:flex;flex-wrap:wrap;align-items:center;gap:6px 8px}",
    ".consent[hidden]{display:none}",
    ".consent .ask{flex-basis:100%}",
    ".consent .state{flex:1}",
    ".consent button{font-size:12.5px;padding:4px 10px;border-radius:6px;border:1px solid #1f4fd1;cursor:pointer;",
    "background:#1f4fd1;color:#fff}",
    ".consent button.secondary{background:#fff;color:#1f4fd1}",
    ".log{flex:1;overflow-y:auto;padding:14px;display:flex;flex-direction:column;gap:10px;background:#fafafb}",
    ".msg{max-width:85%;padding:9px 12px;border-radius:12px;font-size:14.5px;line-height:1.45;white-space:pre-wrap;word-wrap:break-word}",
    ".msg.user{align-self:flex-end;background:#1f4fd1;color:#fff;border-bottom-right-radius:4px}",
    ".msg.assistant{align-self:flex-start;background:#fff;border:1px solid #e3e5ea;border-bottom-left-radius:4px}",
    ".msg.human{align-self:flex-start;background:#fff6e0;border:1px solid #f0d999;border-bottom-left-radius:4px}",
    ".who{display:block;font-size:11.5px;font-weight:600;color:#6b5200;margin-bottom:2px}",
    ".msg.partial::after{content:' …';color:#888}",
    ".notice{margin:0;align-self:center;font-size:12.5px;color:#555;background:#f0f1f4;padding:6px 10px;border-radius:10px;text-align:center}",
    ".notice.error{background:#fde8e8;color:#8a1c1c}",
    ".rating{align-self:center;display:flex;gap:6px}",
    ".rating button{min-width:36px;min-height:36px;border:1px solid #c9cdd6;border-radius:8px;background:#fff;font-size:14px;cursor:pointer}",
    ".rating button:focus-visible{outline:3px solid #1a56db;outline-offset:2px}",
    ".sources{margin-top:8px;border-top:1px solid #eceef2;padding-top:6px;font-size:12.5px}",
    ".sources summary{cursor:pointer;color:#1f4fd1;font-weight:600}",
    ".sources ol{margin:6px 0 0;padding-left:18px}",
    ".sources li{margin:4px 0;color:#333}",
    ".sources .snip{display:block;color:#666;font-size:12px}",
    ".typing{margin:0;align-self:flex-start;color:#777;font-size:13px}",
    ".report{display:block;margin-top:6px;background:none;border:none;padding:2px 0;color:#6a6f7b;font-size:12px;",
    "text-decoration:underline;cursor:pointer}",
    ".report[hidden]{display:none}",
    ".report-form{margin-top:8px;display:flex;flex-direction:column;gap:6px;font-size:12.5px}",
    ".report-form select,.report-form input{font-size:13px;padding:5px;border:1px solid #c9cdd6;border-radius:6px}",
    ".report-form .row{display:flex;gap:6px}",
    ".report-form button{font-size:12.5px;padding:5px 10px;border-radius:6px;border:1px solid #1f4fd1;cursor:pointer;",
    "background:#1f4fd1;color:#fff}",
    ".report-form button.secondary{background:#fff;color:#1f4fd1}",
    ".reported{display:block;margin-top:6px;font-size:12px;color:#2c6e2f}",
    "form{display:flex;gap:8px;padding:10px;border-top:1px solid #e3e5ea;background:#fff}",
    "textarea{flex:1;resize:none;border:1px solid #c9cdd6;border-radius:10px;padding:9px 10px;font-size:15px;",
    "min-height:42px;max-height:120px;color:#1b1b1f;background:#fff}",
    "form button{background:#1f4fd1;color:#fff;border:none;border-radius:10px;padding:0 16px;font-size:15px;",
    "font-weight:600;cursor:pointer;min-width:64px;min-height:42px}",
    "form button:disabled{background:#9aa8d6;cursor:default}",
    ".sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}",
    "@media (max-width:480px){.panel{inset:0;width:100vw;max-width:100vw;height:100%;max-height:100%;",
    "border-radius:0;bottom:0}.launcher{bottom:14px}}",
    "@media (prefers-reduced-motion:no-preference){.msg{animation:in .15s ease-out}}",
    "@keyframes in{from{opacity:0;transform:translateY(4px)}to{opacity:1;transform:none}}"
  ].join("");

  var host = document.createElement("div");
  host.id = "concierge-widget";
  document.body.appendChild(host);
  var root = host.attachShadow({ mode: "open" });
  root.innerHTML =
    "<style>" + CSS + "</style>" +
    '<button class="launcher" type="button" aria-haspopup="dialog" aria-expanded="false" aria-label="Open chat">' +
    '<svg viewBox="0 0 24 24" aria-hidden="true"><path d="M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H8l-4 4V6a2 2 0 0 1 2-2z"/></svg></button>' +
    '<section class="panel" role="dialog" aria-modal="false" aria-labelledby="cw-title" hidden>' +
    '<header><h2 id="cw-title"></h2><button type="button" class="close" aria-label="Close chat">×</button></header>' +
    '<p class="disclosure" id="cw-disclosure" role="note"></p>' +
    '<div class="consent" id="cw-consent" role="group" aria-label="Memory" hidden></div>' +
    '<div class="log" role="log" aria-live="polite" aria-relevant="additions" aria-describedby="cw-disclosure" tabindex="0"></div>' +
    '<form><label class="sr" for="cw-input">Your message</label>' +
    '<textarea id="cw-input" rows="1" maxlength="4000" placeholder="Type your message…" autocomplete="off"></textarea>' +
    '<button type="submit">Send</button></form></section>';

  var launcher = root.querySelector(".launcher");
  var panel = root.querySelector(".panel");
  var closeBtn = root.querySelector(".close");
  var log = root.querySelector(".log");
  var form = root.querySelector("form");
  var input = root.querySelector("textarea");
  var sendBtn = root.querySelector("form button");
  root.getElementById("cw-title").textContent = title;

  var saved = {};
  try { saved = JSON.parse(localStorage.getItem(storeKey) || "{}"); } catch (e) { saved = {}; }
  var state = { token: saved.token || null, conversation: saved.conversation || null,
                lastTurn: 0, status: "assistant", busy: false, poller: null, ready: null };

  function persist() {
    try {
      localStorage.setItem(storeKey, JSON.stringify({ token: state.token, conversation: state.conversation }));
    } catch (e) { /* private mode: the chat works for this page view */ }
  }

  function request(method, path, body) {
    var headers = { "Content-Type": "application/json" };
    if (state.token) headers["X-Concierge-Visitor"] = state.token;
    return fetch(api + path, { method: method, headers: headers, body: body ? JSON.stringify(body) : undefined });
  }

  async function json(method, path, body) {
    var response = await request(method, path, body);
    var data = await response.json().catch(function () { return {}; });
    if (!response.ok) {
      var err = new Error((data.error && data.error.message) || ("HTTP " + response.status));
      err.status = response.status;
      throw err;
    }
    return data;
  }

  function notice(text, isError) {
    var p = document.createElement("p");
    p.className = "notice" + (isError ? " error" : "");
    p.textContent = text;
    if (isError) p.setAttribute("role", "alert");
    log.appendChild(p);
    scroll();
    return p;
  }

  function scroll() { log.scrollTop = log.scrollHeight; }

  function bubble(role, text, author) {
    var div = document.createElement("div");
    div.className = "msg " + role;
    if (role === "human") {
      var who = document.createElement("span");
      who.className = "who";
      who.textContent = author || "Team member";
      div.appendChild(who);
    }
    var body = document.createElement("span");
    body.className = "text";
    var label = document.createElement("span");
    label.className = "sr";
    label.textContent = role === "user" ? "You said: " : role === "human" ? "" : "Assistant said: ";
    div.appendChild(label);
    body.textContent = text;
    div.appendChild(body);
    log.appendChild(div);
    scroll();
    return div;
  }

  function sources(div, citations) {
    if (!citations || !citations.length) return;
    var details = document.createElement("details");
    details.className = "sources";
    var summary = document.createElement("summary");
    summary.textContent = "Sources (" + citations.length + ")";
    details.appendChild(summary);
    var list = document.createElement("ol");
    citations.forEach(function (c) {
      var li = document.createElement("li");
      var name = document.createElement("strong");
      name.textContent = c.title || "Document " + c.document_id;
      li.appendChild(name);
      if (c.position) li.appendChild(document.createTextNode(" — " + c.position));
      if (c.snippet) {
        var snip = document.createElement("span");
        snip.className = "snip";
        snip.textContent = c.snippet;
        li.appendChild(snip);
      }
      list.appendChild(li);
    });
    details.appendChild(list);
    details.addEventListener("toggle", function () {
      if (details.open) details.scrollIntoView({ block: "nearest" });
    });
    div.appendChild(details);
  }

  var CATEGORIES = [["inaccurate", "Wrong or misleading"], ["offensive", "Offensive"],
                    ["harmful", "Harmful or dangerous"], ["illegal", "Illegal"],
                    ["privacy", "Reveals personal data"], ["other", "Something else"]];

  // Generated answers can be reported to the team (a review queue on the operator's side).
  function reportButton(div, turnId) {
    if (!turnId) return;
    var button = document.createElement("button");
    button.type = "button";
    button.className = "report";
    button.textContent = "Report this answer";
    button.addEventListener("click", function () {
      button.hidden = true;
      var form = document.createElement("div");
      form.className = "report-form";
      form.setAttribute("role", "group");
      form.setAttribute("aria-label", "Report this answer");
      var select = document.createElement("select");
      select.setAttribute("aria-label", "What is wrong with it?");
      CATEGORIES.forEach(function (c) {
        var option = document.createElement("option");
        option.value = c[0]; option.textContent = c[1];
        select.appendChild(option);
      });
      var reason = document.createElement("input");
      reason.type = "text"; reason.maxLength = 500;
      reason.placeholder = "Tell us more (optional)";
      reason.setAttribute("aria-label", "Tell us more (optional)");
      var row = document.createElement("div");
      row.className = "row";
      var submit = document.createElement("button");
      submit.type = "button"; submit.textContent = "Send report";
      var cancel = document.createElement("button");
      cancel.type = "button"; cancel.className = "secondary"; cancel.textContent = "Cancel";
      row.appendChild(submit); row.appendChild(cancel);
      form.appendChild(select); form.appendChild(reason); form.appendChild(row);
      div.appendChild(form);
      form.scrollIntoView({ block: "nearest" });
      select.focus();
      cancel.addEventListener("click", function () { form.remove(); button.hidden = false; button.focus(); });
      submit.addEventListener("click", async function () {
        submit.disabled = true;
        try {
          await json("POST", "/conversations/" + state.conversation + "/turns/" + turnId + "/report",
                     { category: select.value, reason: reason.value || null });
          form.remove();
          var done = document.createElement("span");
          done.className = "reported"; done.setAttribute("role", "status");
          done.textContent = "Thank you. A member of our team will review this answer.";
          div.appendChild(done);
        } catch (e) {
          submit.disabled = false;
          notice("The report could not be sent: " + e.message, true);
        }
      });
    });
    div.appendChild(button);
  }

  // Turns in order, up to one still being written (it is shown once it is finished).
  function showTurns(turns) {
    for (var i = 0; i < turns.length; i++) {
      if (turns[i].status === "generating") break;
      showTurn(turns[i]);
    }
  }

  function showTurn(turn) {
    if (turn.id <= state.lastTurn) return;
    state.lastTurn = turn.id;
    var div = bubble(turn.role, turn.content, turn.author);
    if (turn.status === "partial" || turn.status === "interrupted") div.classList.add("partial");
    if (turn.role === "assistant") sources(div, turn.citations);
    if (turn.role === "assistant" && turn.model) reportButton(div, turn.id);
  }

  // CSAT: once the team has resolved the conversation, the visitor may rate the help, 1 to 5.
  function offerRating(rating) {
    if (!rating || !rating.open || state.ratingShown) return;
    state.ratingShown = true;
    var box = document.createElement("div");
    box.className = "rating";
    box.setAttribute("role", "group");
    box.setAttribute("aria-label", "Rate the help you received, 1 (poor) to 5 (excellent)");
    [1, 2, 3, 4, 5].forEach(function (score) {
      var button = document.createElement("button");
      button.type = "button";
      button.textContent = String(score);
      button.setAttribute("aria-label", score + " out of 5");
      button.addEventListener("click", async function () {
        box.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
        try {
          await json("POST", "/conversations/" + state.conversation + "/rating", {score: score});
          box.remove();
          notice("Thank you for your rating.");
        } catch (e) {
          box.querySelectorAll("button").forEach(function (b) { b.disabled = false; });
          notice("Your rating could not be sent. Please try again.", true);
        }
      });
      box.appendChild(button);
    });
    log.appendChild(box);
    scroll();
  }

  function setStatus(status) {
    var was = state.status;
    state.status = status;
    if (status !== "assistant" && was === "assistant") {
      notice("You are in the queue for a member of our team. They will reply here.");
    } else if (status === "assistant" && was !== "assistant") {
      notice("The assistant is back in the conversation.");
    }
    startPolling();
  }

  // New turns are fetched every few seconds while people have the conversation, and now and
  // then while the assistant has it: a person may step in and reply at any moment.
  function startPolling() {
    if (state.poller) clearTimeout(state.poller);
    state.poller = setTimeout(refresh, state.status === "assistant" ? IDLE_POLL_MS : POLL_MS);
  }

  async function refresh() {
    state.poller = null;
    if (state.conversation && !state.busy) {
      try {
        var data = await json("GET", "/conversations/" + state.conversation + "?after=" + state.lastTurn);
        showTurns(data.turns);
        offerRating(data.rating);
        setStatus(data.status);
        return;  // setStatus scheduled the next one
      } catch (e) { /* a missed poll is retried on the next tick */ }
    }
    startPolling();
  }

  // Consent (GDPR Art. 7): the assistant remembers a visitor across conversations only once
  // they agree, asked in the organisation's words; saying no, or withdrawing later, is one
  // click, as easy as agreeing. Each answer is recorded with the version of the text shown.
  var consentBox = root.getElementById("cw-consent");

  function consentButton(text, secondary, onClick) {
    var button = document.createElement("button");
    button.type = "button";
    button.textContent = text;
    if (secondary) button.className = "secondary";
    button.addEventListener("click", onClick);
    return button;
  }

  function showConsent(ask, granted) {
    consentBox.textContent = "";
    var decide = async function (yes) {
      consentBox.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
      try {
        var made = await json("POST", "/consents", { purpose: ask.purpose, granted: yes,
                                                     text_version: ask.version });
        showConsent(ask, made.granted);
        consentBox.querySelector("button").focus();
      } catch (e) {
        showConsent(ask, granted);
        notice("Your choice could not be saved: " + e.message, true);
      }
    };
    var text = document.createElement("span");
    if (granted === null) {
      text.className = "ask";
      text.textContent = ask.text;
      consentBox.appendChild(text);
      consentBox.appendChild(consentButton("Allow", false, function () { decide(true); }));
      consentBox.appendChild(consentButton("No, thanks", true, function () { decide(false); }));
    } else {
      text.className = "state";
      text.setAttribute("role", "status");
      text.textContent = granted
        ? "The assistant remembers what you tell it."
        : "The assistant does not remember you between conversations.";
      consentBox.appendChild(text);
      consentBox.appendChild(granted
        ? consentButton("Stop remembering", true, function () { decide(false); })
        : consentButton("Allow memory", true, function () { decide(true); }));
    }
    consentBox.hidden = false;
  }

  async function loadConsent(config) {
    var purpose = config.consent && config.consent.memory_requires;
    if (!purpose || !config.consent.memory_text) { consentBox.hidden = true; return; }
    var ask = { purpose: purpose, text: config.consent.memory_text,
                version: config.consent.text_versions[purpose] };
    var mine = (await json("GET", "/consents")).purposes[purpose];
    // Asked again when the text changed since the visitor answered.
    showConsent(ask, mine && mine.current_text ? mine.granted : null);
  }

  async function ensureSession() {
    var config = await json("GET", "");
    if (config.poll_seconds > 0) IDLE_POLL_MS = config.poll_seconds * 1000;
    var banner = root.getElementById("cw-disclosure");
    banner.textContent = config.disclosure || "";
    banner.hidden = !config.disclosure;
    if (!state.token) {
      state.token = (await json("POST", "/visitors")).token;
      state.conversation = null;
      persist();
    }
    try {
      await loadConsent(config);
    } catch (e) {
      if (e.status !== 401) throw e;  // an expired visitor token: a new one below
      state.token = (await json("POST", "/visitors")).token;
      state.conversation = null;
      persist();
      await loadConsent(config);
    }
    if (state.conversation) {
      try {
        var data = await json("GET", "/conversations/" + state.conversation);
        showTurns(data.turns);
        state.status = data.status;
        startPolling();
        return;
      } catch (e) {
        if (e.status !== 404 && e.status !== 401) throw e;
        if (e.status === 401) { state.token = (await json("POST", "/visitors")).token; }
        state.conversation = null;
      }
    }
    var made = await json("POST", "/conversations");
    state.conversation = made.id;
    persist();
    made.turns.forEach(showTurn);
    startPolling();
  }

  function ready() {
    if (!state.ready) {
      state.ready = ensureSession().catch(function (e) {
        state.ready = null;
        notice("The chat is unavailable right now (" + e.message + ").", true);
        throw e;
      });
    }
    return state.ready;
  }

  function parseEvents(buffer, onEvent) {
    var blocks = buffer.split("\n\n");
    var rest = blocks.pop();
    blocks.forEach(function (block) {
      var name = "message", data = "";
      block.split("\n").forEach(function (line) {
        if (line.indexOf("event: ") === 0) name = line.slice(7);
        else if (line.indexOf("data: ") === 0) data += line.slice(6);
      });
      if (data) onEvent(name, JSON.parse(data));
    });
    return rest;
  }

  async function send(text) {
    state.busy = true;
    sendBtn.disabled = true;
    var mine = bubble("user", text);
    var typing = document.createElement("p");
    typing.className = "typing";
    typing.textContent = "Assistant is typing…";
    var reply = null, replyText = "";
    try {
      await ready();
      log.appendChild(typing);
      scroll();
      var response = await request("POST", "/conversations/" + state.conversation + "/messages",
                                   { content: text, stream: true });
      if (response.status === 429 || response.status === 503) {
        // Busy: say so, and when to try again; the message goes back into the input box.
        var wait = parseInt(response.headers.get("Retry-After") || "0", 10) || 10;
        typing.remove();
        mine.remove();
        if (!input.value) input.value = text;
        notice("Our assistant is busy right now. Please send your message again in about " +
               wait + (wait === 1 ? " second." : " seconds."), true);
        return;
      }
      if (!response.ok) {
        var data = await response.json().catch(function () { return {}; });
        throw new Error((data.error && data.error.message) || ("HTTP " + response.status));
      }
      var reader = response.body.getReader();
      var decoder = new TextDecoder();
      var buffer = "";
      for (;;) {
        var chunk = await reader.read();
        if (chunk.done) break;
        buffer += decoder.decode(chunk.value, { stream: true });
        buffer = parseEvents(buffer, function (name, data) {
          if (name === "turn.delta") {
            if (!reply) { typing.remove(); reply = bubble("assistant", ""); reply.setAttribute("aria-busy", "true"); }
            replyText += data.content;
            reply.querySelector(".text").textContent = replyText.replace(/^\s+/, "");
            scroll();
          } else if (name === "turn.replaced") {
            if (!reply) { typing.remove(); reply = bubble("assistant", ""); }
            replyText = data.content;
            reply.querySelector(".text").textContent = replyText;
          } else if (name === "turn.completed") {
            typing.remove();
            state.lastTurn = Math.max(state.lastTurn, data.user_turn.id);
            if (data.reply) {
              if (!reply) reply = bubble("assistant", data.reply.content);
              reply.removeAttribute("aria-busy");
              reply.querySelector(".text").textContent = data.reply.content;
              state.lastTurn = Math.max(state.lastTurn, data.reply.id);
              sources(reply, data.citations);
              if (data.reply.model) reportButton(reply, data.reply.id);
            }
            setStatus(data.conversation.status);
          } else if (name === "error") {
            throw new Error(data.error.message);
          }
        });
      }
    } catch (e) {
      typing.remove();
      if (reply) reply.classList.add("partial");
      mine.setAttribute("aria-invalid", "true");
      notice("Your message could not be answered: " + e.message + " Please try again.", true);
    } finally {
      typing.remove();
      state.busy = false;
      sendBtn.disabled = false;
    }
  }

  function open() {
    panel.hidden = false;
    launcher.setAttribute("aria-expanded", "true");
    launcher.setAttribute("aria-label", "Close chat");
    input.focus();
    ready().catch(function () {});
  }

  function close() {
    panel.hidden = true;
    launcher.setAttribute("aria-expanded", "false");
    launcher.setAttribute("aria-label", "Open chat");
    launcher.focus();
  }

  launcher.addEventListener("click", function () { panel.hidden ? open() : close(); });
  closeBtn.addEventListener("click", close);
  panel.addEventListener("keydown", function (e) { if (e.key === "Escape") close(); });
  input.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); form.requestSubmit(); }
  });
  input.addEventListener("input", function () {
    input.style.height = "auto";
    input.style.height = Math.min(input.scrollHeight, 120) + "px";
  });
  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var text = input.value.trim();
    if (!text || state.busy) return;
    input.value = "";
    input.style.height = "auto";
    send(text);
  });
  if (tag.getAttribute("data-open") === "true") open();
})();
