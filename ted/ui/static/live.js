// Keeps running jobs' figures current without reloading the page: every second, each element
// marked data-live is replaced by the element of the same id in the HTML its data-live address
// answers, until the server marks it data-finished. Nothing is rendered here: one renderer, the server's.
"use strict";

function follow(element) {
  const refresh = async () => {
    try {
      const response = await fetch(element.dataset.live, { cache: "no-store", credentials: "same-origin" });
      if (response.ok) {
        const template = document.createElement("template");
        template.innerHTML = await response.text();
        const fresh = template.content.getElementById(element.id);
        if (fresh) {
          element.replaceWith(fresh);
          element = fresh;
        }
      }
    } catch (error) {
      // The server may be restarting: try again at the next tick.
    }
    if (element.dataset.finished !== "true") setTimeout(refresh, document.hidden ? 5000 : 1000);
  };
  if (element.dataset.finished !== "true") setTimeout(refresh, 1000);
}

document.querySelectorAll("[data-live]").forEach(follow);
