// A 1,000,000-item batch's page, measured (not a test of the command: it takes minutes and
// prints figures; run it with `npx playwright test --project=bench`): the first HTML's weight,
// the time to a live page, and frame times while 5,000 changes a second arrive and the person
// scrolls and pages.
import { expect } from "@playwright/test";
import { hydrated, signIn } from "./accounts";
import { test } from "./server";

const ITEMS = 1_000_000;
const CHUNK = 10_000;
/** Changes a second the reporters aim at, each bulk call 500 of them. */
const RATE = 5_000;
const SECONDS = 10;

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * q))];
}

test("a 1,000,000-item batch page: weight, time to live, frame times under 5,000 changes/s @bench", async ({
  page,
  startServer,
}) => {
  test.setTimeout(20 * 60_000);
  const server = await startServer({ WORKERS: "0", WRITES_PER_MINUTE: "1000000" });
  const names = (from: number) => Array.from({ length: CHUNK }, (_, i) => `scan-${String(from + i).padStart(7, "0")}.tif`);
  const made = Date.now();
  const created = await server.createBatch(CHUNK, "A million scans");
  for (let from = CHUNK; from < ITEMS; from += CHUNK) await server.appendItems(created, names(from));
  console.log(`made ${ITEMS} items in ${((Date.now() - made) / 1000).toFixed(1)} s`);
  const id = created.batch_id;
  const path = `/batches/${id}`;

  await signIn(page, server.token, server.url);
  const html = await page.request.get(`${server.url}${path}`, { headers: { "accept-encoding": "identity" } });
  const htmlBytes = (await html.body()).length;
  const started = Date.now();
  await page.goto(`${server.url}${path}`);
  await hydrated(page);
  await expect(page.getByTestId("live")).toHaveAttribute("data-state", "live");
  const live = Date.now() - started;
  await expect(page.getByTestId("count-total")).toHaveText(/^1.?000.?000$/);

  // The first items, which the page shows: the reporters move them processing, then done.
  const ids: string[] = [];
  for (let after: number | undefined = undefined; ids.length < (RATE * SECONDS) / 2; ) {
    const query = after === undefined ? "limit=500" : `limit=500&after=${after}`;
    const res = await fetch(`${server.url}/api/batches/${id}/items?${query}`, {
      headers: { authorization: `Bearer ${server.token}` },
    });
    const body = await res.json();
    ids.push(...body.items.map((item: any) => item.id));
    after = body.next;
  }

  await page.evaluate(() => {
    const w = window as any;
    w.__frames = [];
    let last = performance.now();
    const frame = (t: number) => {
      w.__frames.push(t - last);
      last = t;
      if (!w.__stop) requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
  });
  let sent = 0;
  const report = async (chunk: string[], status: string) => {
    const res = await fetch(`${server.url}/api/batches/${id}/items/status`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${server.token}` },
      body: JSON.stringify(chunk.map((item) => ({ item, status }))),
    });
    if (res.status !== 200) throw new Error(`report: ${res.status} ${await res.text()}`);
    sent += chunk.length;
  };
  // One call of 500 changes every 100 ms: 250 items processing, and the 250 before them done.
  const calls: Promise<void>[] = [];
  const load = (async () => {
    const begin = Date.now();
    for (let tick = 0; tick < (RATE / 500) * SECONDS; tick++) {
      const at = begin + tick * 100;
      await new Promise((r) => setTimeout(r, Math.max(0, at - Date.now())));
      const fresh = ids.slice(tick * 250, tick * 250 + 250);
      const previous = ids.slice((tick - 1) * 250, tick * 250);
      calls.push(report(fresh, "processing").then(() => (tick > 0 ? report(previous, "done") : undefined)));
    }
  })();
  // Meanwhile a person scrolls and pages.
  for (let i = 0; i < SECONDS; i++) {
    await page.mouse.wheel(0, i % 2 ? -1200 : 1200);
    await page.waitForTimeout(500);
    if (i === 3) await page.getByTestId("next").click();
    if (i === 6) await page.getByTestId("prev").click();
    await page.waitForTimeout(500);
  }
  await load;
  await Promise.all(calls);
  const frames: number[] = await page.evaluate(() => {
    (window as any).__stop = true;
    return (window as any).__frames.slice(1);
  });
  const sorted = [...frames].sort((a, b) => a - b);
  const long = frames.filter((f) => f > 50).length;
  console.log(
    `1,000,000-item page: first HTML ${(htmlBytes / 1024).toFixed(1)} KB, live ${live} ms after navigation; ` +
      `${sent} changes in ${SECONDS} s (${Math.round(sent / SECONDS)}/s) while scrolling and paging: ` +
      `${frames.length} frames, frame time p50 ${quantile(sorted, 0.5).toFixed(1)} ms, p95 ${quantile(sorted, 0.95).toFixed(1)} ms, ` +
      `p99 ${quantile(sorted, 0.99).toFixed(1)} ms, max ${sorted[sorted.length - 1].toFixed(1)} ms, ${long} over 50 ms`,
  );
  // The page followed every change: its counters are the server's.
  const summary = await (
    await fetch(`${server.url}/api/batches/${id}`, { headers: { authorization: `Bearer ${server.token}` } })
  ).json();
  expect(summary.counts.completed).toBe(sent / 2 - 125);
  await expect(page.getByTestId("count-completed")).toHaveText(String(summary.counts.completed));
  await expect(page.getByTestId("count-processing")).toHaveText(String(summary.counts.processing));
});

