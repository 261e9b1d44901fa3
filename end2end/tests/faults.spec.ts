// Faults a real browser watches: Redis stopped, a server killed behind a proxy, a worker killed
// mid-item, and a server stopped (SIGTERM) under 100 open streams. Each page must end on the
// exact final counts without a reload.
import { expect, Page } from "@playwright/test";
import { execSync } from "node:child_process";
import { expectNoReload, hydrated, openLive, signIn } from "./accounts";
import { PrivateRedis, postgresDatabase, signal, startProxy, test, TestServer } from "./server";

test.describe.configure({ timeout: 90_000 });

const noFailures = { DEMO_FAILURE_RATE: "0" };

/** Waits for the page to finish, then compares every counter with the API's answer. */
async function endsOnTheFinalCounts(page: Page, server: TestServer, batch: any, total: number) {
  await expect(page.getByTestId("live")).toHaveAttribute("data-state", "finished", { timeout: 60_000 });
  await expect(page.getByTestId("status-badge")).toHaveText("Completed");
  await expect(page.getByTestId("count-completed")).toHaveText(String(total));
  const api = await server.get(batch);
  for (const key of ["queued", "processing", "completed", "failed", "total"]) {
    await expect(page.getByTestId(`count-${key}`)).toHaveText(String(api.counts[key]));
  }
  await expectNoReload(page);
}

const completed = async (page: Page) => Number(await page.getByTestId("count-completed").textContent());

test("Redis stopped for 5 s mid-batch: the page stays live and ends on the final counts", async ({
  page,
  startServer,
}) => {
  const redis = await PrivateRedis.start();
  try {
    const server = await startServer({ REDIS_URL: redis.url, WORKERS: "0" });
    const batch = await server.createBatch(40);
    await openLive(page, server, `/batches/${batch.batch_id}`);
    server.startWorkers({ ...noFailures, REDIS_URL: redis.url, WORKERS: "2", ITEM_DELAY_MS: "300" });
    await expect(page.getByTestId("count-completed")).not.toHaveText("0");

    await redis.kill();
    const before = await completed(page);
    // No events without Redis: the server reads the database every 2 s and the page moves on.
    await expect.poll(() => completed(page), { timeout: 5_000 }).toBeGreaterThan(before);
    await page.waitForTimeout(2_000);
    await expect(page.getByTestId("live")).toHaveAttribute("data-state", /live|reconnecting/);
    await redis.restart();

    await endsOnTheFinalCounts(page, server, batch, 40);
  } finally {
    await redis.stop();
  }
});

test("two servers behind a proxy, one killed: the page goes on from the other", async ({ page, startServer }) => {
  const db = postgresDatabase();
  const proxy = { close: () => {} };
  try {
    const a = await startServer({ WORKERS: "0" }, { databaseUrl: db.url, prefix: `e2e-pair-${Date.now()}:` });
    const b = await startServer({ WORKERS: "0" }, a.shared);
    const front = await startProxy([a.port, b.port]);
    proxy.close = front.close;
    const batch = await b.createBatch(30);
    await openLive(page, { url: front.url, token: a.token }, `/batches/${batch.batch_id}`);
    b.startWorkers({ ...noFailures, WORKERS: "2", ITEM_DELAY_MS: "250" });
    await expect(page.getByTestId("count-completed")).not.toHaveText("0");

    await a.kill();
    await expect(page.getByTestId("live")).toHaveAttribute("data-state", "reconnecting");
    await endsOnTheFinalCounts(page, b, batch, 30);
  } finally {
    proxy.close();
    db.drop();
  }
});

test("a worker killed mid-item: the item is claimed again after its lease, and only it twice", async ({
  page,
  startServer,
}) => {
  const db = postgresDatabase();
  try {
    const server = await startServer({ WORKERS: "0" }, { databaseUrl: db.url, prefix: `e2e-lease-${Date.now()}:` });
    const items = 8;
    const batch = await server.createBatch(items);
    await openLive(page, server, `/batches/${batch.batch_id}`);
    const lease = { ...noFailures, WORKERS: "1", PROCESSING_LEASE_SECS: "2" };
    // A slow item: the worker is surely in the middle of it when it dies.
    const doomed = server.startWorkers({ ...lease, ITEM_DELAY_MS: "6000" });
    await expect(page.getByTestId("count-processing")).toHaveText("1");
    await signal(doomed, "SIGKILL");
    server.startWorkers({ ...lease, ITEM_DELAY_MS: "100" });

    await endsOnTheFinalCounts(page, server, batch, items);
    const attempts = execSync(`psql "${db.url}" -tAc "SELECT attempts FROM items ORDER BY position"`)
      .toString()
      .trim()
      .split("\n")
      .map(Number);
    expect(attempts.filter((n) => n === 2), `attempts per item: ${attempts}`).toHaveLength(1);
    expect(attempts.filter((n) => n === 1)).toHaveLength(items - 1);
  } finally {
    db.drop();
  }
});

/** A client that follows a stream as the page does: on `reconnect` it comes back at once. */
function follow(url: string, token: string, stop: AbortSignal) {
  void (async () => {
    while (!stop.aborted) {
      try {
        const res = await fetch(url, { headers: { authorization: `Bearer ${token}` }, signal: stop });
        const reader = res.body!.getReader();
        let text = "";
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          text = (text + Buffer.from(value).toString()).slice(-200);
          if (text.includes("event: reconnect")) break;
        }
        await reader.cancel().catch(() => {});
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  })();
}

async function streamsOpen(server: TestServer): Promise<number> {
  try {
    const text = await (await fetch(`${server.url}/metrics`)).text();
    return Number(text.match(/^batchwatch_streams_open (\S+)$/m)?.[1] ?? 0);
  } catch {
    return -1;
  }
}

test("SIGTERM on a server with 100 open streams: every one is back on the other at once", async ({
  browser,
  startServer,
}) => {
  const db = postgresDatabase();
  const stop = new AbortController();
  const proxy = { close: () => {} };
  try {
    const env = { WORKERS: "0", MAX_STREAMS_PER_USER: "1000" };
    const a = await startServer(env, { databaseUrl: db.url, prefix: `e2e-term-${Date.now()}:` });
    const b = await startServer(env, a.shared);
    const front = await startProxy([a.port, b.port]);
    proxy.close = front.close;
    const batch = await a.createBatch(100);
    const path = `/batches/${batch.batch_id}`;
    // Four browsers (a browser keeps at most six connections to one host) and 92 clients that
    // behave as the page does.
    const pages: Page[] = [];
    for (let i = 0; i < 4; i++) {
      const page = await (await browser.newContext()).newPage();
      await signIn(page, a.token, front.url);
      await page.goto(`${front.url}${path}`);
      await hydrated(page);
      await expect(page.getByTestId("live")).toHaveAttribute("data-state", "live");
      pages.push(page);
    }
    // Each page holds two: its batch's and its user's (the toasts).
    for (let i = 0; i < 92; i++) follow(`${front.url}/api${path}/stream`, a.token, stop.signal);
    await expect.poll(() => streamsOpen(a), { timeout: 20_000 }).toBe(100);

    // Every state each page's live indicator passes through from here on.
    for (const page of pages) {
      await page.evaluate(() => {
        const live = document.querySelector('[data-testid="live"]')!;
        const seen: string[] = [];
        (window as unknown as { seen: string[] }).seen = seen;
        new MutationObserver(() => seen.push(live.getAttribute("data-state") ?? "")).observe(live, {
          attributeFilter: ["data-state"],
        });
      });
    }
    const started = Date.now();
    const stopped = a.terminate();
    await expect.poll(() => streamsOpen(b), { timeout: 10_000, intervals: [50] }).toBe(100);
    // How fast is a figure, printed rather than asserted (on a loaded CI machine a debug build
    // takes seconds): what is asserted is that no page lost its connection on the way, so
    // none waited for its backoff. A server that closed its streams without `reconnect`, or
    // took connections it would not answer, would show `reconnecting`.
    console.log(`100 streams back on the other server ${Date.now() - started} ms after SIGTERM`);
    for (const page of pages) {
      const seen = await page.evaluate(() => (window as unknown as { seen: string[] }).seen);
      expect(seen.filter((state) => state !== "live" && state !== "connecting")).toEqual([]);
    }
    await stopped;
    // The pages are live on the other server: a change reaches each of them.
    await b.report(batch, 0, "processing");
    for (const page of pages) {
      await expect(page.getByTestId("live")).toHaveAttribute("data-state", "live");
      await expect(page.getByTestId("count-processing")).toHaveText("1");
    }
  } finally {
    stop.abort();
    proxy.close();
    db.drop();
  }
});
