// Where tiles go on the meeting page: pure geometry, then one function that places tile
// elements inside their container. Tiles never overlap: every rectangle comes from one grid.
// A tile's shape follows its video (the picture inside is fitted, never cropped).

export const GAP = 8;
const DEFAULT_ASPECT = 16 / 9;
const ALONE_MAX_WIDTH = 480;  // someone alone sees a modest self view, not a wall of themselves

/** The grid (cols x rows) that gives `count` tiles of shape `aspect` the largest size in
 *  a `width` x `height` box, and that tile size. A grid that runs against the box's shape
 *  (a column in a wide window, a row in a tall one) must win by more than a tenth. */
export function bestGrid(count, width, height, aspect = DEFAULT_ASPECT, gap = GAP) {
  let best = { cols: 1, rows: 1, w: 0, h: 0 };
  let bestScore = 0;
  if (count < 1 || width <= 0 || height <= 0) return best;
  for (let cols = 1; cols <= count; cols += 1) {
    const rows = Math.ceil(count / cols);
    const w = Math.min((width - gap * (cols - 1)) / cols, ((height - gap * (rows - 1)) / rows) * aspect);
    const against = (width > height && rows > cols) || (height > width && cols > rows);
    const score = against ? w * 0.9 : w;
    if (score > bestScore + 0.5) {
      best = { cols, rows, w, h: w / aspect };
      bestScore = score;
    }
  }
  best.w = Math.max(0, Math.floor(best.w));
  best.h = Math.max(0, Math.floor(best.h));
  return best;
}

/** Rectangles for `count` equal tiles centred in `box` ({x, y, w, h}); the last, shorter
 *  row is centred too. */
export function gridRects(count, box, aspect = DEFAULT_ASPECT, gap = GAP, maxWidth = Infinity) {
  const g = bestGrid(count, box.w, box.h, aspect, gap);
  let { w, h } = g;
  if (w > maxWidth) {
    w = Math.floor(maxWidth);
    h = Math.floor(w / aspect);
  }
  const rects = [];
  const top = box.y + (box.h - (g.rows * h + (g.rows - 1) * gap)) / 2;
  for (let i = 0; i < count; i += 1) {
    const row = Math.floor(i / g.cols);
    const inRow = Math.min(g.cols, count - row * g.cols);
    const left = box.x + (box.w - (inRow * w + (inRow - 1) * gap)) / 2;
    const col = i - row * g.cols;
    rects.push({ x: Math.round(left + col * (w + gap)), y: Math.round(top + row * (h + gap)), w, h });
  }
  return rects;
}

/** Speaker view: one large tile and the rest in a strip (beside it in a wide box, under it
 *  in a tall one). Returns rectangles in the order [main, ...strip]. */
export function speakerRects(count, box, aspects, gap = GAP) {
  if (count <= 1) return gridRects(count, box, aspects[0] || DEFAULT_ASPECT, gap);
  const stripAspect = median(aspects.slice(1));
  const wide = box.w >= box.h * 1.1;
  let main;
  let strip;
  if (wide) {
    const stripW = clamp(Math.round(box.w * 0.22), 120, 300);
    main = { x: box.x, y: box.y, w: box.w - stripW - gap, h: box.h };
    strip = { x: box.x + box.w - stripW, y: box.y, w: stripW, h: box.h };
  } else {
    const stripH = clamp(Math.round(box.h * 0.24), 80, 200);
    main = { x: box.x, y: box.y, w: box.w, h: box.h - stripH - gap };
    strip = { x: box.x, y: box.y + box.h - stripH, w: box.w, h: stripH };
  }
  return [...gridRects(1, main, aspects[0] || DEFAULT_ASPECT, gap), ...gridRects(count - 1, strip, stripAspect, gap)];
}

function clamp(value, low, high) {
  return Math.max(low, Math.min(high, value));
}

function median(values) {
  const known = values.filter((v) => v > 0).sort((a, b) => a - b);
  return known.length ? known[Math.floor(known.length / 2)] : DEFAULT_ASPECT;
}

/** Place `tiles` ([{el, aspect}], aspect 0 when unknown; main first in speaker view) inside `container`.
 *  mode: "grid" | "speaker" | "alone". Sizes are set through the CSSOM (CSP allows no
 *  inline style attributes). */
export function arrange(container, tiles, mode) {
  const box = { x: 0, y: 0, w: container.clientWidth, h: container.clientHeight };
  // Tiles without a picture (camera off, not started yet) take the shape most pictures have.
  const usual = median(tiles.map((t) => t.aspect));
  const aspects = tiles.map((t) => t.aspect || usual);
  let rects;
  if (mode === "speaker") rects = speakerRects(tiles.length, box, aspects);
  else rects = gridRects(tiles.length, box, median(aspects), GAP, mode === "alone" ? ALONE_MAX_WIDTH : Infinity);
  tiles.forEach((tile, i) => {
    const r = rects[i];
    const s = tile.el.style;
    s.left = `${r.x}px`;
    s.top = `${r.y}px`;
    s.width = `${r.w}px`;
    s.height = `${r.h}px`;
    tile.el.classList.toggle("small", r.w < 200);
  });
}
