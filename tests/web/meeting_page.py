"""Helpers for driving the meeting page in Chromium: its menus, panels and geometry."""

from __future__ import annotations

from typing import Any

from playwright.async_api import Page

DESKTOP = {"width": 1366, "height": 768}
PHONE = {"width": 390, "height": 844}


async def more(page: Page, label: str) -> None:
    """Choose ``label`` in the toolbar's More menu."""
    if await page.is_hidden("#more-menu"):
        await page.click("#more")
    await page.click(f"#more-menu button:has-text('{label}')")
