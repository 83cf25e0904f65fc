/*
 * hpchub-walltime: the time left of the hpchub batch job a JupyterLab runs in, a warning before the
 * job's walltime ends, and a save of every open document at that moment.
 *
 * A prebuilt JupyterLab 4 extension written by hand, so the package needs no Node.js build: the
 * container below is what JupyterLab's bootstrap expects of a federated extension (it loads this
 * file, calls init() with its share scope, then get('./extension') for a factory of the module
 * holding the plugins). It imports nothing; it uses only the `app` it is activated with.
 *
 * The data comes from hpchub.singleuser: GET {baseUrl}hpchub/walltime -> {ends, warning, now}
 * (epoch seconds), sent with the same credentials JupyterLab's own requests carry (the token if
 * the page has one, the _xsrf cookie as X-XSRFToken, the session cookie).
 *
 * The file name carries the first 16 hex digits of the file's sha256 (tests/test_walltime.py
 * checks it): browsers cache static files, so an edited file must get a new name (and package.json
 * the new "load" path).
 */
(function () {
  'use strict';

  var NAME = 'hpchub-walltime';
  var TICK_MS = 5000; // the display is redrawn this often
  var REFRESH_MS = 300000; // and the server asked again this often (the job's clock, a changed limit)
  var LAST_SAVE_SECONDS = 60; // a second save this close to the end, for edits made after the warning

  function cookie(name) {
    var match = document.cookie.match('\\b' + name + '=([^;]*)\\b');
    return match ? match[1] : undefined;
  }

  function duration(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    if (seconds < 60) {
      return seconds + ' s';
    }
    var days = Math.floor(seconds / 86400);
    var hours = Math.floor((seconds % 86400) / 3600);
    var minutes = Math.floor((seconds % 3600) / 60);
    if (days) {
      return days + ' d ' + hours + ' h';
    }
    return hours ? hours + ' h ' + minutes + ' min' : minutes + ' min';
  }

  function clock(epochSeconds) {
    var end = new Date(epochSeconds * 1000);
    var text = end.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    if (end.toDateString() !== new Date().toDateString()) {
      text = end.toLocaleDateString() + ' ' + text;
    }
    return text;
  }

  function element(id, style) {
    var node = document.getElementById(id);
    if (!node) {
      node = document.createElement('div');
      node.id = id;
      node.setAttribute('style', style);
      document.body.appendChild(node);
    }
    return node;
  }

  function activate(app) {
    var settings = app.serviceManager.serverSettings;
    var url = settings.baseUrl + 'hpchub/walltime';
    var info = null; // {ends, warning, offset}: offset = the server's clock minus ours, in seconds
    var warned = false;
    var lastSaved = false;

    function request() {
      var headers = {};
      if (settings.token) {
        headers['Authorization'] = 'token ' + settings.token;
      }
      var xsrf = cookie('_xsrf');
      if (xsrf !== undefined) {
        headers['X-XSRFToken'] = xsrf;
      }
      var init = Object.assign({}, settings.init, { method: 'GET', cache: 'no-store', headers: headers });
      return settings.fetch.call(null, url, init).then(function (response) {
        if (!response.ok) {
          throw new Error(url + ': ' + response.status);
        }
        return response.json();
      });
    }

    function saveAll(why) {
      if (!app.commands.hasCommand('docmanager:save-all')) {
        console.warn(NAME + ': no docmanager:save-all command; nothing saved');
        return;
      }
      app.commands.execute('docmanager:save-all').then(
        function () { console.info(NAME + ': saved all documents (' + why + ')'); },
        function (error) { console.error(NAME + ': saving failed', error); }
      );
    }

    function draw() {
      if (!info || !info.ends) {
        return;
      }
      var left = info.ends - (Date.now() / 1000 + info.offset);
      var label = element(NAME, 'position:fixed;right:8px;bottom:28px;z-index:10000;padding:2px 8px;' +
        'font:12px var(--jp-ui-font-family, sans-serif);border-radius:4px;pointer-events:none;' +
        'background:var(--jp-layout-color2, #eee);color:var(--jp-ui-font-color1, #000);opacity:0.9');
      label.textContent = 'Time left: ' + duration(left) + ', ends ' + clock(info.ends - info.offset);
      label.title = 'The walltime of this server\'s batch job; the job is stopped at its end.';
      if (info.warning > 0 && left <= info.warning) {
        label.style.background = '#b71c1c';
        label.style.color = '#fff';
        if (!warned) {
          warned = true;
          var banner = element(NAME + '-warning', 'position:fixed;top:0;left:0;right:0;z-index:10001;' +
            'padding:8px 16px;text-align:center;font:14px var(--jp-ui-font-family, sans-serif);' +
            'background:#b71c1c;color:#fff');
          banner.setAttribute('role', 'alert');
          banner.textContent = 'This server\'s walltime ends at ' + clock(info.ends - info.offset) + ' (in ' +
            duration(left) + '); then the job is stopped. All open documents were saved just now; save ' +
            'what you change from now on, and start a new server to go on working.';
          var close = document.createElement('button');
          close.textContent = '\u00d7';
          close.setAttribute('aria-label', 'Close the walltime warning');
          close.setAttribute('style', 'margin-left:12px;background:none;border:1px solid #fff;color:#fff;cursor:pointer');
          close.onclick = function () { banner.remove(); };
          banner.appendChild(close);
          saveAll(duration(left) + ' before the walltime ends');
        }
        if (!lastSaved && left <= LAST_SAVE_SECONDS && info.warning > LAST_SAVE_SECONDS) {
          lastSaved = true;
          saveAll('the last minute');
        }
      }
    }

    function refresh() {
      request().then(
        function (data) {
          info = { ends: data.ends, warning: data.warning, offset: data.now ? data.now - Date.now() / 1000 : 0 };
          draw();
        },
        function (error) { console.warn(NAME + ': no walltime from the server', error); }
      );
    }

    app.restored.then(function () {
      refresh();
      setInterval(draw, TICK_MS);
      setInterval(refresh, REFRESH_MS);
    });
  }

  var plugin = {
    id: NAME + ':plugin',
    description: 'The time left of the hpchub job, a warning and a save of all documents before its walltime ends.',
    autoStart: true,
    requires: [],
    activate: activate
  };

  window._JUPYTERLAB = window._JUPYTERLAB || {};
  window._JUPYTERLAB[NAME] = {
    // Shares no module and needs none from the share scope.
    init: function () { return Promise.resolve(); },
    get: function (module) {
      if (module !== './extension') {
        return Promise.reject(new Error(NAME + ' has no module ' + module));
      }
      // An ES module's shape: JupyterLab takes `default` only when __esModule is set.
      return Promise.resolve(function () { return { __esModule: true, default: [plugin] }; });
    }
  };
})();
