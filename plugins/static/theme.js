// drillkit "Restore drills" view: follow Airflow's own colour mode (light, dark or system).
// Airflow's UI (next-themes) keeps it in localStorage "theme" and as a class on its <html>;
// this view shares its origin, and inside Airflow's frame it can read the parent page too.
"use strict";
(function () {
  const media = window.matchMedia("(prefers-color-scheme: dark)");
  function airflowTheme() {
    try {
      if (window.parent !== window) {
        const classes = window.parent.document.documentElement.classList;
        if (classes.contains("dark")) return "dark";
        if (classes.contains("light")) return "light";
      }
    } catch (e) { /* another origin: fall back to the stored choice */ }
    let stored = null;
    try { stored = window.localStorage.getItem("theme"); } catch (e) { /* storage disabled */ }
    if (stored === "dark" || stored === "light") return stored;
    return media.matches ? "dark" : "light";
  }
  function apply() { document.documentElement.dataset.theme = airflowTheme(); }
  apply();
  window.addEventListener("storage", apply);
  media.addEventListener("change", apply);
  try {
    if (window.parent !== window) {
      new MutationObserver(apply).observe(window.parent.document.documentElement, {
        attributes: true, attributeFilter: ["class"],
      });
    }
  } catch (e) { /* another origin */ }
})();
