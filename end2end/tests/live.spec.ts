import { expect } from "@playwright/test";
import { expectNoReload, openLive } from "./accounts";
import { test } from "./server";

// Each test runs its own server; live batches take a few seconds.
test.describe.configure({ timeout: 60_000 });

test("a 20-item batch reaches 100 % Completed without a reload", async ({ page, startServer }) => {
  const server = await startServer({ WORKERS: "0" });
  const batch = await server.createBatch(20, "Wedding photos");
  await openLive(page, server, `/batches/${batch.batch_id}`);
  server.startWorkers({ WORKERS: "2", ITEM_DELAY_MS: "150", DEMO_FAILURE_RATE: "0" });

  // Moving while we watch: some items done, not all.
  await expect(page.getByTestId("count-completed")).not.toHaveText("0");
  await expect(page.getByTestId("throughput")).toContainText("items/s");
  await page.screenshot({ path: "artifacts/live-progress.png", fullPage: true });

  await expect(page.getByTestId("status-badge")).toHaveText("Completed", { timeout: 30_000 });
  await expect(page.getByTestId("percent")).toHaveText("100 %");
  await expect(page.getByRole("progressbar")).toHaveAttribute("aria-valuenow", "100");
  await expect(page.getByTestId("live")).toHaveAttribute("data-state", "finished");
  await expect(page.getByTestId("summary")).toContainText("20 done, 0 failed");
  await expect(page.locator('[data-testid="item"][data-status="done"]')).toHaveCount(20);

  const api = await server.get(batch);
  for (const key of ["queued", "processing", "completed", "failed", "total"]) {
    await expect(page.getByTestId(`count-${key}`)).toHaveText(String(api.counts[key]));
  }
  await expectNoReload(page);
});

test("the page's streams are answered on their own path, on the connections the page reuses", async ({
  page,
  startServer,
}) => {
  // The server answers a stream's request without hyper, even on a connection kept alive from
  // the page's other requests, the sign-in form's POST among them (serve.rs,
  // serve/stream_connection.rs): its head says `connection: close`, which hyper's would not.
  const server = await startServer({ WORKERS: "0" });
  const batch = await server.createBatch(3, "Lean streams");
  // Every stream the browser opens: the user's (on each page) and the batch's.
  const heads: { url: string; head: Record<string, string> }[] = [];
  page.on("response", async (response) => {
    if (/\/api\/(batches\/[^/]+\/)?stream/.test(response.url()))
      heads.push({ url: response.url(), head: await response.allHeaders() });
  });
  // Which streams Chromium asked on a connection it had used before (its DevTools protocol).
  const reused: string[] = [];
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Network.enable");
  cdp.on("Network.responseReceived", ({ response }) => {
    if (response.connectionReused && /\/stream/.test(response.url)) reused.push(response.url);
  });
  await openLive(page, server, `/batches/${batch.batch_id}`);
  await expect.poll(() => heads.filter(({ url }) => url.includes(batch.batch_id)).length).toBe(1);
  expect(heads.filter(({ url }) => /\/api\/stream/.test(url)).length).toBeGreaterThan(0);
  for (const { url, head } of heads) {
    expect(head["content-type"], url).toContain("text/event-stream");
    expect(head["connection"], url).toBe("close");
  }
  expect(reused.length, "streams asked on a connection used before").toBeGreaterThan(0);
  await server.report(batch, 0, "processing");
  await expect(page.getByTestId("count-processing")).toHaveText("1");
});

test("a batch with failures ends Partial, in orange, with the error shown", async ({ page, startServer }) => {
  const server = await startServer({ WORKERS: "0" });
  const batch = await server.createBatch(4);
  await openLive(page, server, `/batches/${batch.batch_id}`);
  for (const i of [0, 1, 2]) {
    await server.report(batch, i, "processing");
    await server.report(batch, i, "done");
  }
  await server.report(batch, 3, "processing");
  await expect(page.getByTestId("status-badge")).toHaveText("Processing");
  await expect(page.locator('[data-testid="item"][data-status="processing"]')).toHaveCount(1);
  await server.report(batch, 3, "failed", "corrupt JPEG header");

  const badge = page.getByTestId("status-badge");
  await expect(badge).toHaveText("Partial");
  // Orange: red strongest, then green, then blue (the color read back in sRGB).
  const [r, g, b] = await badge.evaluate((el) => {
    const ctx = document.createElement("canvas").getContext("2d")!;
    ctx.fillStyle = getComputedStyle(el).backgroundColor;
    ctx.fillRect(0, 0, 1, 1);
    return Array.from(ctx.getImageData(0, 0, 1, 1).data);
  });
  expect(r).toBeGreaterThan(g);
  expect(g).toBeGreaterThan(b + 15);
  await expect(page.getByText("corrupt JPEG header")).toBeVisible();
  await expect(page.getByTestId("count-failed")).toHaveText("1");
  await expect(page.getByTestId("count-completed")).toHaveText("3");
  await expect(page.getByTestId("live")).toHaveAttribute("data-state", "finished");
  await expectNoReload(page);
});

test("the page reconnects after the server is killed and shows the final state", async ({ page, startServer }) => {
  const server = await startServer({ WORKERS: "0" });
  const batch = await server.createBatch(24);
  await openLive(page, server, `/batches/${batch.batch_id}`);
  // Work goes on in a process of its own while the page's server is down.
  server.startWorkers({ WORKERS: "2", ITEM_DELAY_MS: "200", DEMO_FAILURE_RATE: "0" });
  await expect(page.getByTestId("count-completed")).not.toHaveText("0");

  await server.kill();
  await expect(page.getByTestId("live")).toHaveAttribute("data-state", "reconnecting");
  await expect(page.getByTestId("live")).toContainText("Reconnecting in");
  await server.restart();

  await expect(page.getByTestId("live")).toHaveAttribute("data-state", /live|finished/, { timeout: 20_000 });
  await expect(page.getByTestId("status-badge")).toHaveText("Completed", { timeout: 30_000 });
  await expect(page.getByTestId("count-completed")).toHaveText("24");
  await expect(page.getByTestId("live")).toHaveAttribute("data-state", "finished");
  await expectNoReload(page);
});

test("items added to a batch show up on its open page", async ({ page, startServer }) => {
  const server = await startServer({ WORKERS: "0" });
  const batch = await server.createBatch(2);
  await openLive(page, server, `/batches/${batch.batch_id}`);
  await server.appendItems(batch, ["late-1.jpg", "late-2.jpg"]);
  await expect(page.locator('[data-testid="item"]')).toHaveCount(4);
  await expect(page.getByTestId("count-total")).toHaveText("4");
  await expect(page.getByText("late-2.jpg")).toBeVisible();
  await server.report({ ...batch, items: (await server.get(batch)).items }, 3, "processing");
  await expect(page.locator('[data-testid="item"][data-status="processing"]')).toHaveText(/late-2\.jpg/);
  await expectNoReload(page);
});

test("signing out elsewhere sends a watching page to /login", async ({ page, startServer }) => {
  const server = await startServer({ WORKERS: "0", STREAM_KEEPALIVE_SECS: "1" });
  const batch = await server.createBatch(3);
  await openLive(page, server, `/batches/${batch.batch_id}`);
  // Another tab of the same browser signs out: the same cookie, its session ended.
  const other = await page.context().newPage();
  await other.goto(`${server.url}/`);
  await other.getByRole("button", { name: "Sign out" }).click();
  await expect(other).toHaveURL(/\/login$/);
  await expect(page).toHaveURL(new RegExp(`/login\\?next=%2Fbatches%2F${batch.batch_id}$`), { timeout: 10_000 });
});
