/* neuronviz's page script: the selection, its overlay and detail, the opacity sliders.
   Everything it needs is in the page (the JSON in #nv-data); it fetches nothing. */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("nv-data").textContent);
  var entries = data.entries || {};

  function all(selector) {
    return Array.prototype.slice.call(document.querySelectorAll(selector));
  }
  function byId(id) {
    return document.getElementById(id);
  }
  function setText(id, text) {
    var el = byId(id);
    if (el) { el.textContent = text; }
  }
  function info(el) {  // the numbers of a point (its SVG title) or of a list item (its title attribute)
    var t = el.querySelector ? el.querySelector("title") : null;
    return t ? t.textContent : (el.getAttribute("title") || "");
  }
  function withKey(key) {
    return all("[data-key]").filter(function (e) { return e.getAttribute("data-key") === key; });
  }

  function select(key) {
    var marked = withKey(key);
    if (!marked.length) { return; }
    all(".nv-sel").forEach(function (e) { e.classList.remove("nv-sel"); });
    marked.forEach(function (e) { e.classList.add("nv-sel"); });
    var el = marked[0], entry = entries[key];
    all("img.nv-shown").forEach(function (img, i) {
      img.src = entry && entry.h && entry.h[i] ? entry.h[i] : data.blank;
    });
    var box = byId("nv-box");
    if (box) {
      var b = entry && entry.b;
      box.style.display = b ? "block" : "none";
      if (b) {
        box.style.top = b[0] + "%";
        box.style.left = b[1] + "%";
        box.style.height = (b[2] - b[0]) + "%";
        box.style.width = (b[3] - b[1]) + "%";
      }
    }
    var ring = byId("nv-ring");
    if (ring) {
      var point = marked.filter(function (e) { return e.classList.contains("nv-pt"); })[0];
      ring.style.display = point ? "inline" : "none";
      if (point) {
        ring.setAttribute("cx", point.getAttribute("cx"));
        ring.setAttribute("cy", point.getAttribute("cy"));
      }
    }
    setText("nv-title", el.getAttribute("data-label") || key);
    setText("nv-numbers", info(el));
    setText("nv-note", entry ? (entry.n || "") : (data.missing || ""));
    var extra = byId("nv-extra");
    if (extra) { extra.innerHTML = entry && entry.x ? entry.x : ""; }
    document.body.setAttribute("data-selected", key);
  }

  function show(id) {  // one of a group of panels (e.g. the channel ranking of one layer)
    all(".nv-switch").forEach(function (e) { e.style.display = e.id === id ? "" : "none"; });
    all("[data-show]").forEach(function (e) {
      e.classList.toggle("nv-shown-layer", e.getAttribute("data-show") === id);
    });
  }

  document.addEventListener("click", function (ev) {
    var el = ev.target.closest ? ev.target.closest("[data-key],[data-show],[data-select]") : null;
    if (!el) { return; }
    if (el.hasAttribute("data-show")) { show(el.getAttribute("data-show")); }
    var key = el.getAttribute("data-key") || el.getAttribute("data-select");  // a layer selects its best channel
    if (key) { select(key); }
  });
  document.addEventListener("mouseover", function (ev) {
    var el = ev.target.closest ? ev.target.closest("[data-key]") : null;
    if (el) { setText("nv-hover", info(el)); }  // the numbers start with the neuron's name
  });
  all("input.nv-opacity").forEach(function (slider) {
    function apply() {
      all(slider.getAttribute("data-target")).forEach(function (e) { e.style.opacity = slider.value; });
      var out = byId(slider.getAttribute("data-out"));
      if (out) { out.textContent = Number(slider.value).toFixed(2); }
    }
    slider.addEventListener("input", apply);
    apply();
  });
  if (data.shown) { show(data.shown); }
  if (data.selected) { select(data.selected); }
  document.body.setAttribute("data-ready", "1");
}());
