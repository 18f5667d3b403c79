/* wsgiws-rooms.js: follow a wsgiws hub room from a browser, resuming after any cut.
 *
 *   <script src="/static/wsgiws-rooms.js"></script>
 *   const feed = new WsgiwsFollower("/ws?room=lobby", {
 *     onmessage: (data, msg) => show(data),    // each message once, in order
 *     onstatus: (state, detail) => {},         // "open", "closed", "reconnecting", "gap"
 *   });
 *   feed.send(JSON.stringify({say: "hi"}));   // while open (returns false otherwise)
 *
 * Frames are the hub's JSON wire format (wsgiws.hub.json_wire_format):
 * {"room", "pos", "data"}; a frame with "pos" and no "data" (the server's greeting)
 * only moves the position; anything else goes to onmessage as it came. On every
 * reconnect the URL gets after=<last position>, so the server's
 * hub.join(ws, room, after=...) replays what was missed. Reconnects use exponential
 * backoff with full jitter (a random wait in [0, delay], delay doubling from
 * minDelay to maxDelay ms, reset by a message). A close with code 4409 means the
 * server's history lost our position: onstatus("gap", reason) and no more
 * reconnects; the page resynchronises (reload, fetch state) and makes a new
 * follower. ongreeting(frame) gets those position-only frames. Options: position (start after it), storageKey (keep the position in
 * sessionStorage so a reload resumes too), minDelay, maxDelay, protocols.
 * No build step, no dependency. */
(function (root) {
  "use strict";
  var GAP_CODE = 4409;

  function absolute(url) {
    var u = new URL(url, root.location.href);
    if (u.protocol === "http:") u.protocol = "ws:";
    if (u.protocol === "https:") u.protocol = "wss:";
    return u;
  }

  function WsgiwsFollower(url, options) {
    options = options || {};
    this.url = url;
    this.onmessage = options.onmessage || function () {};
    this.onstatus = options.onstatus || function () {};
    this.ongreeting = options.ongreeting || function () {};
    this.minDelay = options.minDelay || 100;
    this.maxDelay = options.maxDelay || 5000;
    this.protocols = options.protocols;
    this.storageKey = options.storageKey || null;
    this.position = options.position || null;
    if (!this.position && this.storageKey && root.sessionStorage) {
      this.position = root.sessionStorage.getItem(this.storageKey);
    }
    this.connections = 0;
    this.ws = null;
    this._delay = this.minDelay;
    this._stopped = false;
    this._timer = null;
    this._connect();
  }

  WsgiwsFollower.prototype._connect = function () {
    var self = this;
    var u = absolute(this.url);
    if (this.position) u.searchParams.set("after", this.position);
    else u.searchParams.delete("after");
    var ws = new WebSocket(u.toString(), this.protocols);
    this.ws = ws;
    ws.onopen = function () {
      self.connections += 1;
      self.onstatus("open", self.connections);
    };
    ws.onmessage = function (event) { self._frame(event.data); };
    ws.onclose = function (event) {
      if (self.ws !== ws) return;
      self.ws = null;
      if (event.code === GAP_CODE) {
        self._stopped = true;
        self.onstatus("gap", event.reason);
        return;
      }
      self.onstatus("closed", event.code);
      if (!self._stopped) self._schedule();
    };
  };

  WsgiwsFollower.prototype._frame = function (text) {
    var frame = null;
    if (typeof text === "string") {
      try { frame = JSON.parse(text); } catch (e) { frame = null; }
    }
    if (!frame || typeof frame !== "object" || !("pos" in frame)) {
      this.onmessage(text, null);
      return;
    }
    this.position = String(frame.pos);
    if (this.storageKey && root.sessionStorage) {
      root.sessionStorage.setItem(this.storageKey, this.position);
    }
    this._delay = this.minDelay;
    if ("data" in frame) this.onmessage(frame.data, frame);
    else if ("b64" in frame) this.onmessage(atob(frame.b64), frame);
    else this.ongreeting(frame);
  };

  WsgiwsFollower.prototype._schedule = function () {
    var self = this;
    var wait = Math.random() * this._delay;  // full jitter: reconnects spread out
    this._delay = Math.min(this._delay * 2, this.maxDelay);
    this.onstatus("reconnecting", wait);
    this._timer = setTimeout(function () {
      self._timer = null;
      if (!self._stopped) self._connect();
    }, wait);
  };

  WsgiwsFollower.prototype.send = function (data) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(data);
    return true;
  };

  WsgiwsFollower.prototype.close = function () {
    this._stopped = true;
    if (this._timer) clearTimeout(this._timer);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
  };

  root.WsgiwsFollower = WsgiwsFollower;
})(typeof window !== "undefined" ? window : this);
