/* Gatehouse: the little the pages do with JavaScript on. Everything here is an extra: every
   page works without it. No inline scripts (the CSP forbids them), no build step. */
(function () {
  "use strict";

  /* Times are rendered on the server in the viewer's zone: tell it the browser's
     (a person's own setting, on /account, wins over this). Asking Intl for the zone costs a
     long task on a slow phone (~100 ms at Lighthouse's 4x slowdown), so a browser that has
     the cookie asks again at most once an hour: often enough for someone who travels. */
  var ZONE_CHECKED = "gh_tz_checked_at", ZONE_RECHECK_MS = 3600 * 1000;

  function zoneCookie() {  /* "gh_tz=Asia%2FTokyo", or undefined */
    return document.cookie.split("; ").filter(function (c) { return c.indexOf("gh_tz=") === 0; })[0];
  }

  function zoneCheckedRecently() {
    if (!zoneCookie()) return false;
    try { return Date.now() - Number(localStorage.getItem(ZONE_CHECKED) || 0) < ZONE_RECHECK_MS; }
    catch (e) { return false; }
  }

  function rememberTimeZone() {
    if (zoneCheckedRecently()) return;
    var zone;
    try { zone = Intl.DateTimeFormat().resolvedOptions().timeZone; } catch (e) { return; }
    try { localStorage.setItem(ZONE_CHECKED, String(Date.now())); } catch (e) { /* private mode: ask each time */ }
    if (!zone || /[^A-Za-z0-9_+\-\/]/.test(zone)) return;
    if (zoneCookie() !== "gh_tz=" + encodeURIComponent(zone)) {
      document.cookie = "gh_tz=" + encodeURIComponent(zone) + "; path=/; max-age=31536000; samesite=lax" +
        (location.protocol === "https:" ? "; secure" : "");
    }
  }

  /* Toasts: a close button on each; successes leave by themselves after a while (not while
     the pointer or the focus is on them), errors stay until closed. */
  var SUCCESS_STAYS_MS = window.gatehouseToastMs || 8000;  /* the browser tests shorten it */

  function closeToast(toast) {
    var hadFocus = toast.contains(document.activeElement);
    toast.remove();
    if (hadFocus) document.getElementById("main").focus();
  }

  function timeOut(toast) {
    if (!toast.classList || !toast.classList.contains("toast-ok")) return;
    var timer = setTimeout(function () { closeToast(toast); }, SUCCESS_STAYS_MS);
    function hold() { clearTimeout(timer); }
    function letGo() {
      clearTimeout(timer);
      timer = setTimeout(function () { closeToast(toast); }, SUCCESS_STAYS_MS / 2);
    }
    toast.addEventListener("mouseenter", hold);
    toast.addEventListener("focusin", hold);
    toast.addEventListener("mouseleave", letGo);
    toast.addEventListener("focusout", letGo);
  }

  function watchToasts() {
    var region = document.getElementById("toasts");
    if (!region) return;
    Array.prototype.forEach.call(region.children, timeOut);
    new MutationObserver(function (changes) {
      changes.forEach(function (change) { Array.prototype.forEach.call(change.addedNodes, timeOut); });
    }).observe(region, { childList: true });
    document.addEventListener("click", function (event) {
      var button = event.target.closest && event.target.closest("[data-close-toast]");
      if (button) closeToast(button.closest(".toast"));
    });
  }

  /* The message a form left (templates/base.html) takes the focus, where `autofocus` did not. */
  function focusFlash() {
    var flash = document.getElementById("flash");
    if (flash && (document.activeElement === document.body || document.activeElement === null)) flash.focus();
  }

  /* Keyboard shortcuts on the approvals queue (announced on the page): j / k move between
     requests, a approves, r goes to the reason to reject, x selects for a decision on several. */
  function approvalShortcuts() {
    var queue = document.querySelector("[data-shortcuts]");
    if (!queue) return;
    var status = document.getElementById("shortcut-status");

    function rows() { return Array.prototype.slice.call(queue.querySelectorAll("tbody tr[id^='request-row-']")); }
    function current() { return document.activeElement && document.activeElement.closest("tr[id^='request-row-']"); }
    function say(text) { if (status) status.textContent = text; }
    function move(step) {
      var all = rows();
      if (!all.length) return;
      var at = all.indexOf(current());
      var next = all[Math.max(0, Math.min(all.length - 1, at < 0 ? 0 : at + step))];
      next.tabIndex = -1;
      next.focus();
      say(next.getAttribute("data-summary") || "");
    }
    function act(selector, what) {
      var row = current();
      var target = row && row.querySelector(selector);
      if (!target) { say(row ? "You cannot " + what + " this request." : "Move to a request first (j or k)."); return; }
      if (target.tagName === "INPUT" && target.type !== "checkbox") target.focus(); else target.click();
    }
    document.addEventListener("keydown", function (event) {
      if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
      var field = event.target.closest && event.target.closest("input, textarea, select, [contenteditable]");
      if (field && !(field.type === "checkbox")) return;
      var key = event.key;
      if (key === "j") move(1);
      else if (key === "k") move(-1);
      else if (key === "a") act("form[action$='/approve'] button", "approve");
      else if (key === "r") act("form[action$='/reject'] input[name='comment']", "reject");
      else if (key === "x") act("input[name='ids']", "select");
      else return;
      event.preventDefault();
    });
  }

  /* The resource picker narrows as one types (without JavaScript, its search form asks the server). */
  function filterResources() {
    var box = document.querySelector("input[data-filter]");
    if (!box) return;
    var count = document.getElementById("resource-q-count");
    box.addEventListener("input", function () {
      var list = document.querySelector(box.getAttribute("data-filter"));
      if (!list) return;
      var words = box.value.toLowerCase().trim().split(/\s+/).filter(Boolean);
      var shown = 0;
      Array.prototype.forEach.call(list.querySelectorAll(".resource-option"), function (option) {
        var text = option.getAttribute("data-search") || "";
        var match = words.every(function (word) { return text.indexOf(word) >= 0; });
        option.hidden = !match;
        if (match) shown += 1;
      });
      if (count) count.textContent = words.length ? shown + (shown === 1 ? " resource matches." : " resources match.") : "";
    });
  }

  function start() {
    document.documentElement.setAttribute("data-js", "ready");  /* what needs this script shows now */
    rememberTimeZone();
    filterResources();
    watchToasts();
    focusFlash();
    approvalShortcuts();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();
