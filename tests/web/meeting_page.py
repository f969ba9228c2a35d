"""Helpers for driving the meeting page in Chromium: its menus, panels and geometry."""

from __future__ import annotations

import os
from typing import Any

from playwright.async_api import Page

DESKTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}
SHOTS = os.environ.get("MEETNOW_SHOTS")  # a folder for screenshots of each checked state

# What a person would call a broken screen: tiles on top of each other or outside their area,
# a name cut off or covered, a control off screen, a page that scrolls sideways.
LAYOUT_PROBLEMS = """
() => {
  const problems = [];
  const vw = window.innerWidth, vh = window.innerHeight;
  const root = document.documentElement;
  if (root.scrollWidth > vw) problems.push(`the page scrolls sideways (${root.scrollWidth} > ${vw})`);
  const area = document.getElementById("tiles").getBoundingClientRect();
  const tiles = [...document.querySelectorAll("#tiles .tile")].filter((t) => t.offsetParent !== null);
  const rects = tiles.map((t) => t.getBoundingClientRect());
  const label = (t) => (t.querySelector(".name-text") || t).textContent;
  rects.forEach((a, i) => {
    if (a.width < 60 || a.height < 45) problems.push(`tile ${label(tiles[i])} is ${a.width}x${a.height}`);
    if (a.left < area.left - 1 || a.top < area.top - 1 || a.right > area.right + 1 || a.bottom > area.bottom + 1) {
      problems.push(`tile ${label(tiles[i])} leaves its area`);
    }
    rects.forEach((b, j) => {
      if (j <= i) return;
      if (a.left < b.right - 1 && b.left < a.right - 1 && a.top < b.bottom - 1 && b.top < a.bottom - 1) {
        problems.push(`tiles ${label(tiles[i])} and ${label(tiles[j])} overlap`);
      }
    });
    const name = tiles[i].querySelector(".name");
    const r = name.getBoundingClientRect();
    if (r.left < a.left - 1 || r.right > a.right + 1 || r.top < a.top - 1 || r.bottom > a.bottom + 1) {
      problems.push(`the name ${label(tiles[i])} sticks out of its tile`);
    }
    const hit = document.elementFromPoint(r.left + Math.min(r.width / 2, 16), r.top + r.height / 2);
    if (!hit || !name.contains(hit)) problems.push(`the name ${label(tiles[i])} is covered by ${hit && hit.outerHTML.slice(0, 60)}`);
    const text = tiles[i].querySelector(".name-text");
    if (text.scrollWidth > text.clientWidth + 1 && text.clientWidth < 24) problems.push(`the name ${label(tiles[i])} is cut to nothing`);
  });
  const centres = [];
  for (const control of document.querySelectorAll(".controls button")) {
    if (control.offsetParent === null || control.closest("#more-menu")) continue;
    const r = control.getBoundingClientRect();
    centres.push((r.top + r.bottom) / 2);
    if (r.left < 0 || r.top < 0 || r.right > vw || r.bottom > vh) {
      problems.push(`control ${control.textContent.trim() || control.id} is outside the viewport`);
    }
  }
  if (Math.max(...centres) - Math.min(...centres) > 10) problems.push("the controls take more than one row");
  const messages = document.getElementById("messages");
  if (messages.offsetParent !== null && messages.scrollWidth > messages.clientWidth) problems.push("the chat scrolls sideways");
  return problems;
}
"""

TILE_BOXES = """
() => [...document.querySelectorAll("#tiles .tile")].filter((t) => t.offsetParent !== null).map((t) => {
  const r = t.getBoundingClientRect();
  return {name: t.querySelector(".name-text").textContent, x: Math.round(r.x), y: Math.round(r.y),
          w: Math.round(r.width), h: Math.round(r.height), self: t.classList.contains("self"),
          screen: t.classList.contains("screen"), main: t.classList.contains("main")};
})
"""


async def more(page: Page, label: str) -> None:
    """Choose ``label`` in the toolbar's More menu."""
    if await page.is_hidden("#more-menu"):
        await page.click("#more")
    await page.click(f"#more-menu button:has-text('{label}')")


async def layout_problems(page: Page) -> list[str]:
    """Everything wrong with the page's layout as it is now (empty when all is well)."""
    await settled(page)
    problems: list[str] = await page.evaluate(LAYOUT_PROBLEMS)
    return problems


async def settled(page: Page) -> None:
    """Let the page finish laying out (its layout runs in an animation frame, after a resize
    has been observed)."""
    await page.evaluate("() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))")
    await page.wait_for_function("() => !window.meetnow.layoutPending", polling="raf", timeout=5000)


async def tile_boxes(page: Page) -> list[dict[str, Any]]:
    await settled(page)
    boxes: list[dict[str, Any]] = await page.evaluate(TILE_BOXES)
    return boxes


async def check_sizes(pages: list[Page], state: str) -> None:
    """At desktop and phone size, each page's layout holds; pages end at desktop size."""
    for size, label in ((PHONE, "phone"), (DESKTOP, "desktop")):
        for page in pages:
            await page.set_viewport_size(size)
        for page in pages:
            problems = await layout_problems(page)
            name = await page.input_value("#name")
            if SHOTS:  # pictures of every state, to look at
                await page.screenshot(path=f"{SHOTS}/{state.replace(' ', '-')}-{label}-{name}.png")
            assert not problems, f"{state}, {label}, {name}: {problems}"
