"""CSS and JavaScript inlined into every HTML page that :mod:`fxkit.drawing.html` writes.

Kept as Python strings (not package data files) so the viewer works from any install, zip or
frozen app, and the page never fetches anything.
"""

from __future__ import annotations

__all__ = ["VIEWER_CSS", "ERROR_TRAP_JS", "VIEWER_JS"]

VIEWER_CSS = r"""
* { box-sizing: border-box; }
html, body { margin: 0; height: 100%; font: 13px/1.4 system-ui, sans-serif; color: #222; }
body { display: flex; flex-direction: column; }
header { display: flex; gap: 12px; align-items: center; padding: 6px 10px;
  background: #263238; color: #eceff1; }
header h1 { font-size: 15px; margin: 0; font-weight: 600; flex: 1;
  overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
header input { width: 260px; padding: 3px 6px; border-radius: 4px; border: 1px solid #90a4ae; }
header .count { min-width: 90px; font-size: 12px; color: #b0bec5; }
header button { background: #455a64; color: #eceff1; border: 1px solid #607d8b;
  border-radius: 4px; padding: 2px 8px; cursor: pointer; }
main { flex: 1; display: flex; min-height: 0; }
.panes { flex: 1; display: flex; min-width: 0; }
.pane { flex: 1; display: flex; flex-direction: column; min-width: 0; border-right: 1px solid #cfd8dc; }
.pane h2 { margin: 0; padding: 3px 8px; font-size: 12px; background: #eceff1; font-weight: 600; }
.canvas { flex: 1; overflow: hidden; position: relative; cursor: grab; background: #fafafa; }
.canvas.dragging { cursor: grabbing; }
.canvas svg { width: 100%; height: 100%; display: block; user-select: none; }
aside { width: 340px; overflow: auto; border-left: 1px solid #cfd8dc; padding: 6px 10px; background: #fff; }
aside h3 { font-size: 13px; margin: 10px 0 4px; border-bottom: 1px solid #eceff1; }
aside table { border-collapse: collapse; width: 100%; }
aside td { vertical-align: top; padding: 1px 4px; word-break: break-all;
  font-family: Menlo, Consolas, monospace; font-size: 11px; }
aside td:first-child { color: #607d8b; white-space: nowrap; word-break: normal;
  font-family: system-ui, sans-serif; }
aside a { color: #1565c0; cursor: pointer; text-decoration: underline; }
.scope-row { font-size: 12px; cursor: pointer; white-space: nowrap; overflow: hidden;
  text-overflow: ellipsis; padding: 1px 0; }
.scope-row:hover { background: #eceff1; }
.scope-row.collapsed { font-weight: 600; color: #6a1b9a; }
.legend span { display: inline-block; padding: 0 6px; margin: 2px; border-radius: 3px; font-size: 11px; }
g.node { cursor: pointer; }
g.node.selected rect { stroke: #d50000; stroke-width: 3; }
g.node.match rect { stroke: #ff6d00; stroke-width: 3; }
g.node.st-added rect { fill: #b9f6ca; }
g.node.st-removed rect { fill: #ff8a80; }
g.node.st-changed rect { fill: #ffe57f; }
path.edge.hot { stroke: #d50000; stroke-width: 2.2; }
g.scope-box rect { fill: #ede7f6; stroke: #6a1b9a; stroke-width: 1.5; stroke-dasharray: 5 3; }
g.scope-box { cursor: pointer; }
.hidden { display: none; }
#selftest { display: none; }
"""

# Installed first, so that errors raised while the viewer starts are recorded too.
ERROR_TRAP_JS = r"""
window.__fxErrors = [];
window.addEventListener('error', function (e) { window.__fxErrors.push(String(e.message)); });
(function () {
  var original = console.error;
  console.error = function () {
    window.__fxErrors.push(Array.prototype.join.call(arguments, ' '));
    return original.apply(console, arguments);
  };
})();
"""

VIEWER_JS = r"""
(function () {
  'use strict';
  var data = JSON.parse(document.getElementById('fx-data').textContent);
  var SVGNS = 'http://www.w3.org/2000/svg';
  var FIELDS = [['op', 'op'], ['target', 'target'], ['kind', 'module class'], ['args', 'args'],
    ['kwargs', 'kwargs'], ['dtype', 'dtype'], ['shape', 'shape'], ['source', 'source'],
    ['module', 'module path'], ['status', 'diff']];

  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }

  function Pane(spec, index) {
    var self = this;
    this.spec = spec;
    this.index = index;
    this.canvas = document.getElementById('canvas-' + spec.id);
    this.svg = this.canvas.querySelector('svg');
    this.nodeEls = new Array(spec.nodes.length);
    this.byName = {};
    this.edgesOf = spec.nodes.map(function () { return []; });
    this.users = spec.nodes.map(function () { return []; });
    this.hiddenBy = new Int32Array(spec.nodes.length);
    this.selected = -1;
    this.matches = [];
    this.matchCursor = 0;
    var groups = this.svg.querySelectorAll('g.node');
    for (var k = 0; k < groups.length; k++) {
      var i = +groups[k].getAttribute('data-i');
      self.nodeEls[i] = groups[k];
    }
    spec.nodes.forEach(function (n, i) {
      self.byName[n.name] = i;
      if (spec.status) {
        n.status = spec.status[i];
        if (n.status !== 'same') self.nodeEls[i].classList.add('st-' + n.status);
      }
    });
    this.edgeEls = Array.prototype.slice.call(this.svg.querySelectorAll('path.edge'));
    this.edgeEls.forEach(function (e) {
      var a = +e.getAttribute('data-from'), b = +e.getAttribute('data-to');
      self.edgesOf[a].push(e);
      self.edgesOf[b].push(e);
      self.users[a].push(b);
    });
    this.full = { w: +this.svg.getAttribute('width'), h: +this.svg.getAttribute('height') };
    this.svg.removeAttribute('width');
    this.svg.removeAttribute('height');
    // Any mismatch between the view's and the element's aspect goes below the graph.
    this.svg.setAttribute('preserveAspectRatio', 'xMinYMin meet');
    this.overlay = document.createElementNS(SVGNS, 'g');
    this.svg.appendChild(this.overlay);
    this.scopeBoxes = {};
    this.fit();
    this.bindEvents();
    this.buildSidebar();
  }

  Pane.prototype.size = function () {
    return { w: this.canvas.clientWidth || 800, h: this.canvas.clientHeight || 600 };
  };

  Pane.prototype.setView = function (x, y, w) {
    var s = this.size();
    this.view = { x: x, y: y, w: w, h: w * s.h / s.w };
    this.svg.setAttribute('viewBox', [x, y, this.view.w, this.view.h].join(' '));
  };

  Pane.prototype.fit = function () {
    // Whole graph when it is readable that way; tall graphs show their top at a readable
    // scale and are explored by dragging.
    var s = this.size();
    var scale = Math.min(s.w / this.full.w, s.h / this.full.h, 1.2);
    if (scale < 0.6) scale = Math.max(Math.min(s.w / this.full.w, 0.9), 0.6);
    var w = s.w / scale, h = s.h / scale;
    var y = this.full.h < h ? (this.full.h - h) / 2 : 0;
    this.setView((this.full.w - w) / 2, y, w);
  };

  Pane.prototype.zoom = function (factor, sx, sy) {
    var s = this.size(), v = this.view;
    var px = v.x + v.w * sx / s.w, py = v.y + v.h * sy / s.h;
    var w = Math.min(Math.max(v.w * factor, 20), Math.max(this.full.w, this.full.h) * 4);
    this.setView(px - w * sx / s.w, py - (w * s.h / s.w) * sy / s.h, w);
  };

  Pane.prototype.center = function (i) {
    var b = this.spec.boxes[i], v = this.view, s = this.size();
    var w = v.w;
    if (s.w / w < 0.8) w = s.w / 1.0;  // too far out to read the node: zoom to 100%
    this.setView(b[0] - w / 2, b[1] - (w * s.h / s.w) / 2, w);
  };

  Pane.prototype.bindEvents = function () {
    var self = this;
    this.drag = null;  // the press being dragged; kept until the click that ends it is seen
    this.canvas.addEventListener('wheel', function (e) {
      e.preventDefault();
      var r = self.canvas.getBoundingClientRect();
      self.zoom(Math.exp(e.deltaY * 0.0015), e.clientX - r.left, e.clientY - r.top);
    }, { passive: false });
    this.canvas.addEventListener('mousedown', function (e) {
      self.drag = { x: e.clientX, y: e.clientY, vx: self.view.x, vy: self.view.y, moved: false,
        down: true };
      self.canvas.classList.add('dragging');
    });
    window.addEventListener('mousemove', function (e) {
      var d = self.drag;
      if (!d || !d.down) return;
      var k = self.view.w / self.size().w;
      var dx = e.clientX - d.x, dy = e.clientY - d.y;
      if (Math.abs(dx) + Math.abs(dy) > 3) d.moved = true;
      self.setView(d.vx - dx * k, d.vy - dy * k, self.view.w);
    });
    window.addEventListener('mouseup', function () {
      if (self.drag) self.drag.down = false;
      self.canvas.classList.remove('dragging');
    });
    this.svg.addEventListener('click', function (e) {
      var moved = self.drag && self.drag.moved;
      self.drag = null;
      if (moved) return;  // the end of a pan, not a click
      var g = e.target.closest ? e.target.closest('g.node, g.scope-box') : null;
      if (!g) return;
      if (g.classList.contains('scope-box')) self.toggleScope(g.getAttribute('data-scope'));
      else self.select(+g.getAttribute('data-i'), false, true);
    });
  };

  Pane.prototype.select = function (i, fromPeer, keepView) {
    var self = this;
    if (this.selected >= 0) {
      this.nodeEls[this.selected].classList.remove('selected');
      this.edgesOf[this.selected].forEach(function (e) { e.classList.remove('hot'); });
    }
    this.selected = i;
    if (i < 0) { this.showDetails(); return; }
    this.revealNode(i);
    this.nodeEls[i].classList.add('selected');
    this.edgesOf[i].forEach(function (e) { e.classList.add('hot'); });
    if (!keepView) this.center(i);
    this.showDetails();
    if (!fromPeer) {
      panes.forEach(function (other) {
        if (other === self) return;
        var j = other.byName[self.spec.nodes[i].name];
        other.select(j === undefined ? -1 : j, true, false);
      });
    }
  };

  Pane.prototype.nodeLink = function (j) {
    var self = this, a = el('a', this.spec.nodes[j].name);
    a.addEventListener('click', function () { self.select(j, false, false); });
    return a;
  };

  Pane.prototype.showDetails = function () {
    var box = this.details, self = this;
    box.textContent = '';
    if (this.selected < 0) { box.appendChild(el('p', 'No node selected.')); return; }
    var n = this.spec.nodes[this.selected], table = el('table');
    var head = el('tr'); head.appendChild(el('td', 'name')); head.appendChild(el('td', n.name));
    table.appendChild(head);
    FIELDS.forEach(function (f) {
      var value = n[f[0]];
      if (value === undefined || value === '' || value === '{}' || value === '()') return;
      var tr = el('tr'); tr.appendChild(el('td', f[1])); tr.appendChild(el('td', String(value)));
      table.appendChild(tr);
    });
    [['inputs', n.inputs], ['users', this.users[this.selected]]].forEach(function (row) {
      if (!row[1].length) return;
      var tr = el('tr'), td = el('td');
      tr.appendChild(el('td', row[0]));
      row[1].forEach(function (j, k) {
        if (k) td.appendChild(document.createTextNode(', '));
        td.appendChild(self.nodeLink(j));
      });
      tr.appendChild(td);
      table.appendChild(tr);
    });
    box.appendChild(table);
  };

  Pane.prototype.search = function (query) {
    var self = this;
    this.matches.forEach(function (i) { self.nodeEls[i].classList.remove('match'); });
    this.matches = [];
    this.matchCursor = 0;
    var q = query.trim().toLowerCase();
    if (!q) return 0;
    this.spec.nodes.forEach(function (n, i) {
      if (n.name.toLowerCase().indexOf(q) >= 0 || n.target.toLowerCase().indexOf(q) >= 0) {
        self.matches.push(i);
        self.nodeEls[i].classList.add('match');
      }
    });
    if (this.matches.length) this.center(this.matches[0]);
    return this.matches.length;
  };

  Pane.prototype.nextMatch = function () {
    if (!this.matches.length) return;
    this.matchCursor = (this.matchCursor + 1) % this.matches.length;
    var i = this.matches[this.matchCursor];
    this.revealNode(i);
    this.center(i);
  };

  Pane.prototype.setHidden = function (i, delta) {
    this.hiddenBy[i] += delta;
    var hide = this.hiddenBy[i] > 0;
    this.nodeEls[i].classList.toggle('hidden', hide);
  };

  Pane.prototype.refreshEdges = function (members) {
    var self = this;
    members.forEach(function (i) {
      self.edgesOf[i].forEach(function (e) {
        var a = +e.getAttribute('data-from'), b = +e.getAttribute('data-to');
        e.classList.toggle('hidden', self.hiddenBy[a] > 0 && self.hiddenBy[b] > 0);
      });
    });
  };

  Pane.prototype.toggleScope = function (path) {
    var scope = this.spec.scopes.find(function (s) { return s.path === path; });
    if (!scope) return false;
    var self = this, box = this.scopeBoxes[path];
    var collapsing = !box;
    scope.members.forEach(function (i) { self.setHidden(i, collapsing ? 1 : -1); });
    this.refreshEdges(scope.members);
    if (collapsing) {
      var b = scope.box, g = document.createElementNS(SVGNS, 'g');
      g.setAttribute('class', 'scope-box');
      g.setAttribute('data-scope', path);
      var r = document.createElementNS(SVGNS, 'rect');
      r.setAttribute('x', b[0]); r.setAttribute('y', b[1]);
      r.setAttribute('width', b[2] - b[0]); r.setAttribute('height', b[3] - b[1]);
      r.setAttribute('rx', 8);
      var t = document.createElementNS(SVGNS, 'text');
      t.setAttribute('x', (b[0] + b[2]) / 2); t.setAttribute('y', b[1] + 16);
      t.setAttribute('text-anchor', 'middle');
      t.textContent = path + ' (' + scope.members.length + ' nodes, click to expand)';
      var title = document.createElementNS(SVGNS, 'title');
      title.textContent = path;
      g.appendChild(title); g.appendChild(r); g.appendChild(t);
      this.overlay.appendChild(g);
      this.scopeBoxes[path] = g;
    } else {
      box.parentNode.removeChild(box);
      delete this.scopeBoxes[path];
    }
    var row = this.scopeRows[path];
    if (row) row.classList.toggle('collapsed', collapsing);
    return collapsing;
  };

  Pane.prototype.revealNode = function (i) {
    // Expand every collapsed scope that hides node i.
    var self = this;
    if (!this.hiddenBy[i]) return;
    (this.spec.nodes[i].scopes || []).forEach(function (p) {
      if (self.scopeBoxes[p]) self.toggleScope(p);
    });
  };

  Pane.prototype.buildSidebar = function () {
    var self = this, side = document.getElementById('side-' + this.spec.id);
    side.appendChild(el('h3', this.spec.title));
    this.details = el('div');
    side.appendChild(this.details);
    this.showDetails();
    this.scopeRows = {};
    if (!this.spec.scopes.length) return;
    side.appendChild(el('h3', 'Module scopes (click to collapse)'));
    this.spec.scopes.forEach(function (s) {
      var depth = s.path.split('.').length - 1;
      var row = el('div', s.path + '  (' + s.members.length + ')', 'scope-row');
      row.style.paddingLeft = (depth * 12) + 'px';
      row.addEventListener('click', function () { self.toggleScope(s.path); });
      self.scopeRows[s.path] = row;
      side.appendChild(row);
    });
  };

  var panes = data.panes.map(function (spec, k) { return new Pane(spec, k); });
  var input = document.getElementById('search'), count = document.getElementById('count');

  function runSearch() {
    var found = panes.map(function (p) { return p.search(input.value); });
    var total = found.reduce(function (a, b) { return a + b; }, 0);
    count.textContent = input.value.trim() ? total + ' match' + (total === 1 ? '' : 'es') : '';
    return found;
  }
  input.addEventListener('input', runSearch);
  input.addEventListener('keydown', function (e) {
    if (e.key === 'Enter') panes.forEach(function (p) { p.nextMatch(); });
  });
  document.addEventListener('keydown', function (e) {
    if (e.key !== 'Escape') return;  // clear search and selection
    input.value = '';
    runSearch();
    panes.forEach(function (p) { p.select(-1, true, true); });
  });
  document.getElementById('fit').addEventListener('click', function () {
    panes.forEach(function (p) { p.fit(); });
  });
  window.addEventListener('resize', function () {
    panes.forEach(function (p) { p.setView(p.view.x, p.view.y, p.view.w); });
  });
  window.fxViewer = { panes: panes, search: runSearch };

  function selfTest() {
    var report = { errors: window.__fxErrors, panes: [] };
    panes.forEach(function (p) {
      var rendered = 0, sized = 0;
      p.nodeEls.forEach(function (g) {
        if (!g) return;
        rendered += 1;
        var b = g.getBBox();
        if (b.width > 0 && b.height > 0) sized += 1;
      });
      var probe = p.spec.nodes.length > 1 ? p.spec.nodes[1].name : (p.spec.nodes[0] || {}).name;
      input.value = probe || '';
      var hits = runSearch()[p.index];
      var hit = probe !== undefined && p.nodeEls[p.byName[probe]].classList.contains('match');
      input.value = '';
      runSearch();
      if (probe !== undefined) p.select(p.byName[probe], true, false);
      var detailed = p.details.querySelectorAll('tr').length;
      var scopeOk = true;
      if (p.spec.scopes.length) {
        var s = p.spec.scopes[0];
        p.toggleScope(s.path);
        scopeOk = s.members.every(function (i) { return p.nodeEls[i].classList.contains('hidden'); });
        p.toggleScope(s.path);
        scopeOk = scopeOk && s.members.every(function (i) {
          return !p.nodeEls[i].classList.contains('hidden');
        });
      }
      // Pointer input as a person gives it: wheel zooms, drag pans, click selects.
      var before = p.svg.getAttribute('viewBox');
      p.canvas.dispatchEvent(new WheelEvent('wheel', { deltaY: -300, clientX: 100, clientY: 100,
        bubbles: true, cancelable: true }));
      var zoomed = p.svg.getAttribute('viewBox') !== before;
      var x0 = p.view.x;
      p.canvas.dispatchEvent(new MouseEvent('mousedown', { clientX: 200, clientY: 200, bubbles: true }));
      window.dispatchEvent(new MouseEvent('mousemove', { clientX: 120, clientY: 150 }));
      window.dispatchEvent(new MouseEvent('mouseup', {}));
      var panned = p.view.x > x0;
      p.drag = null;  // a real drag ends with a click on the canvas, which clears it
      var clickedOk = true;
      if (p.spec.nodes.length) {
        var last = p.spec.nodes.length - 1;
        p.nodeEls[last].querySelector('rect').dispatchEvent(new MouseEvent('click', { bubbles: true }));
        clickedOk = p.selected === last;
      }
      report.panes.push({ id: p.spec.id, zoomed: zoomed, panned: panned, clicked: clickedOk, nodes: p.spec.nodes.length, rendered: rendered,
        sized: sized, edges: p.edgeEls.length, expectedEdges: p.spec.edgeCount, probe: probe,
        hits: hits, hitMarked: hit, detailRows: detailed, scopes: p.spec.scopes.length,
        scopeToggle: scopeOk });
    });
    if (panes.length > 1 && panes[0].spec.nodes.length) {
      var name = panes[0].spec.nodes[0].name;
      panes[0].select(0, false, false);
      var peer = panes[1].byName[name];
      report.synced = peer === undefined ? null : panes[1].selected === peer;
    }
    var out = document.getElementById('selftest');
    out.textContent = JSON.stringify(report);
    out.setAttribute('data-done', '1');
  }
  // Deep links: #node=NAME selects a node, #q=TEXT searches, #selftest checks the page.
  var hash = decodeURIComponent(location.hash.slice(1));
  if (hash === 'selftest') selfTest();
  else if (hash.indexOf('node=') === 0) {
    panes.forEach(function (p) {
      var i = p.byName[hash.slice(5)];
      if (i !== undefined) p.select(i, true, false);
    });
  } else if (hash.indexOf('q=') === 0) {
    input.value = hash.slice(2);
    runSearch();
  }
})();
"""
