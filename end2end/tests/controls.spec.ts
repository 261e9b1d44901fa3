import { Browser, expect, Page } from "@playwright/test";
import { expectNoReload, hydrated, openLive, signIn, test as signedIn } from "./accounts";
import { test, TestServer } from "./server";

test.describe.configure({ timeout: 60_000 });

/** A second person's browser (the same user, another context) watching the same page. */
async function watcher(browser: Browser, server: TestServer, path: string): Promise<Page> {
  const context = await browser.newContext();
  const page = await context.newPage();
  await openLive(page, server, path);
  return page;
}

const badge = (page: Page) => page.getByTestId("status-badge");

test("pause, resume and cancel: the other browser sees each click live", async ({ page, browser, startServer }) => {
  const server = await startServer({ WORKERS: "0" });
  const batch = await server.createBatch(30, "Archive scans");
  const path = `/batches/${batch.batch_id}`;
  await openLive(page, server, path);
  const other = await watcher(browser, server, path);

  await page.getByTestId("control-pause").click();
  await expect(badge(other)).toHaveText("Paused");
  await expect(badge(page)).toHaveText("Paused");
  await page.getByTestId("control-resume").click();
  await expect(badge(other)).toHaveText("Queued");

  await server.report(batch, 0, "processing");
  await server.report(batch, 0, "done");
  await server.report(batch, 1, "processing");
  await page.getByTestId("control-cancel-ask").click();
  const confirm = page.getByTestId("cancel-confirm");
  await expect(confirm).toContainText("Cancel “Archive scans”?");
  await expect(confirm).toContainText("29 items that have not finished will be cancelled");
  await confirm.getByTestId("control-cancel").click();

  for (const p of [page, other]) {
    await expect(badge(p)).toHaveText("Cancelled");
    await expect(p.getByTestId("count-cancelled")).toHaveText("29");
    await expect(p.getByTestId("tab-cancelled").getByTestId("tab-count")).toHaveText("29");
    await expect(p.locator('[data-testid="item"][data-status="cancelled"]')).toHaveCount(29);
  }
  await expect(confirm).toHaveCount(0);
  await expect(page.getByTestId("control-pause")).toHaveCount(0);
  await expectNoReload(page);
  await expectNoReload(other);
});

test("a cancel faster than events list its items: the rows on screen are read again", async ({ page, startServer }) => {
  // One event a second: the cancel's 60 pages of 500 items come far faster than the pace and
  // its reserve of 25 carry them listed, so the last pages reach the page as an event that
  // lists no items, whose rows the page reads again.
  const server = await startServer({ WORKERS: "0", EVENT_INTERVAL_MS: "1000" });
  const batch = await server.createBatch(10_000, "Many scans");
  const names = (from: number) => Array.from({ length: 10_000 }, (_, i) => `scan-${from + i}.tif`);
  for (const from of [10_000, 20_000]) await server.appendItems(batch, names(from));
  // The last page of items, which the cancel reaches last.
  await openLive(page, server, `/batches/${batch.batch_id}?after=29899`);
  const rows = page.locator('[data-testid="item"]');
  await expect(rows).toHaveCount(100);
  await expect(rows.first()).toContainText("scan-29900.tif");
  await expect(page.locator('[data-testid="item"][data-status="pending"]')).toHaveCount(100);
  const leftOut = async () =>
    Number((await (await fetch(`${server.url}/metrics`)).text()).match(/^batchwatch_events_items_left_out_total (\S+)$/m)?.[1] ?? 0);
  expect(await leftOut()).toBe(0);

  const res = await fetch(`${server.url}/api/batches/${batch.batch_id}/cancel`, {
    method: "POST",
    headers: { authorization: `Bearer ${server.token}` },
  });
  expect(res.status).toBe(200);
  await expect(page.locator('[data-testid="item"][data-status="cancelled"]')).toHaveCount(100);
  await expect(page.getByTestId("count-cancelled")).toHaveText(/^30.?000$/);
  await expect(badge(page)).toHaveText("Cancelled");
  expect(await leftOut()).toBeGreaterThan(0);
  await expectNoReload(page);
});

test("Retry failed opens a finished batch again on every open page; one failed item retries alone", async ({
  page,
  browser,
  startServer,
}) => {
  const server = await startServer({ WORKERS: "0" });
  const batch = await server.createBatch(3, "Invoices");
  for (const [i, outcome] of [[0, "done"], [1, "failed"], [2, "failed"]] as const) {
    await server.report(batch, i, "processing");
    await server.report(batch, i, outcome, outcome === "failed" ? "timeout" : undefined);
  }
  const path = `/batches/${batch.batch_id}`;
  // Finished: the pages are not "live" but "finished", and still follow the batch.
  const open = async (p: Page) => {
    await signIn(p, server.token, server.url);
    await p.goto(`${server.url}${path}`);
    await hydrated(p);
    await expect(p.getByTestId("live")).toHaveAttribute("data-state", "finished");
  };
  await open(page);
  const other = await browser.newContext().then((c) => c.newPage());
  await open(other);
  await expect(badge(other)).toHaveText("Partial");

  await page.getByTestId("control-retry").click();
  for (const p of [page, other]) {
    await expect(badge(p)).toHaveText("Processing");
    await expect(p.getByTestId("live")).toHaveAttribute("data-state", "live");
    await expect(p.locator('[data-testid="item"][data-status="pending"]')).toHaveCount(2);
  }

  await server.report(batch, 1, "processing");
  await server.report(batch, 1, "failed", "still a timeout");
  const row = other.locator('[data-testid="item"][data-status="failed"]');
  await expect(row).toContainText("still a timeout");
  await expect(row).toContainText("2 attempts");
  await row.getByTestId("retry-item").click();
  await expect(page.locator('[data-testid="item"][data-status="failed"]')).toHaveCount(0);
  await expect(page.getByTestId("count-queued")).toHaveText("2");
});

signedIn("the controls are forms that work with JavaScript off @no-js", async ({ page, api, javaScriptEnabled }) => {
  const created = await api.post("/api/batches", { data: { name: "Offline", items: ["a", "b", "c"] } });
  const batch = await created.json();
  await page.goto(`/batches/${batch.batch_id}`);
  await hydrated(page, javaScriptEnabled);
  await page.getByTestId("control-pause").click();
  await expect(badge(page)).toHaveText("Paused");
  await page.getByTestId("control-cancel-ask").click();
  await expect(page).toHaveURL(/confirm=cancel/);
  await expect(page.getByTestId("cancel-confirm")).toContainText("3 items that have not finished");
  await page.getByTestId("control-cancel").click();
  await expect(badge(page)).toHaveText("Cancelled");
  await expect(page.getByTestId("cancel-confirm")).toHaveCount(0);
  const summary = await (await api.get(`/api/batches/${batch.batch_id}`)).json();
  expect(summary.counts.cancelled).toBe(3);
});
