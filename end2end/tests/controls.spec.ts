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
