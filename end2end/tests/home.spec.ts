// The home page lists the person's batches live, and every open page of theirs tells them, with
// a toast (and a browser notification once they asked for it), when one of their batches ends.
import { Browser, expect, Page } from "@playwright/test";
import { expectNoReload, hydrated, openLive, signIn } from "./accounts";
import { test, TestServer } from "./server";

test.describe.configure({ timeout: 60_000 });

async function openHome(page: Page, server: TestServer) {
  await signIn(page, server.token, server.url);
  await page.goto(`${server.url}/`);
  await hydrated(page);
  await page.evaluate(() => ((window as any).__sameDocument = true));
}

const row = (page: Page, name: string) => page.getByTestId("batch-row").filter({ hasText: name });

async function finish(server: TestServer, batch: any, outcomes: string[]) {
  for (const [i, outcome] of outcomes.entries()) {
    await server.report(batch, i, "processing");
    await server.report(batch, i, outcome, outcome === "failed" ? "corrupt file" : undefined);
  }
}

async function otherBrowser(browser: Browser): Promise<Page> {
  return (await browser.newContext()).newPage();
}

test("the home follows every batch live; a batch that ends is told on every open page", async ({
  page,
  browser,
  startServer,
}) => {
  const server = await startServer({ WORKERS: "0" });
  const photos = await server.createBatch(2, "Holiday photos");
  const elsewhere = await server.createBatch(1, "Scans");
  await openHome(page, server);
  await expect(row(page, "Holiday photos")).toContainText("0/2");
  await expect(row(page, "Holiday photos").getByTestId("status-badge")).toHaveText("Queued");
  // Another browser of the same person, on another batch's page.
  const other = await otherBrowser(browser);
  await openLive(other, server, `/batches/${elsewhere.batch_id}`);

  // A batch made elsewhere appears, newest first, without a reload.
  await server.createBatch(3, "Invoices March");
  await expect(page.getByTestId("batch-row").first()).toContainText("Invoices March");
  await expect(page.getByTestId("batch-row")).toHaveCount(3);

  await server.report(photos, 0, "processing");
  await expect(row(page, "Holiday photos").getByTestId("status-badge")).toHaveText("Processing");
  await expect(page.getByTestId("toast")).toHaveCount(0);
  await server.report(photos, 0, "done");
  await server.report(photos, 1, "processing");
  await server.report(photos, 1, "failed", "corrupt file");

  for (const p of [page, other]) {
    const toast = p.getByTestId("toast");
    await expect(toast).toHaveCount(1);
    await expect(toast).toContainText("Holiday photos partial: 1 done, 1 failed");
    await expect(p.getByRole("status").filter({ has: toast })).toHaveAttribute("aria-live", "polite");
  }
  await expect(row(page, "Holiday photos")).toContainText("2/2");
  await expect(row(page, "Holiday photos").getByTestId("status-badge")).toHaveText("Partial");
  await expect(row(page, "Holiday photos").getByRole("progressbar")).toHaveAttribute("aria-valuenow", "100");

  // Dismissed on one page, it stays on the other; its link opens the batch.
  await page.getByTestId("toast").getByRole("button", { name: "Dismiss" }).click();
  await expect(page.getByTestId("toast")).toHaveCount(0);
  await other.getByTestId("toast").getByRole("link", { name: "Open" }).click();
  await expect(other).toHaveURL(new RegExp(`/batches/${photos.batch_id}$`));
  await expect(other.getByRole("heading", { level: 1 })).toHaveText("Holiday photos");

  // Its other batch ends too: told again, while the first stays told once.
  await finish(server, elsewhere, ["done"]);
  await expect(page.getByTestId("toast")).toHaveText(/Scans completed: 1 of 1 done/);
  await expectNoReload(page);
});

test("a browser notification comes only once the person asked for them", async ({ page, startServer }) => {
  // A stand-in for the browser's Notification that records what the page does with it.
  await page.addInitScript(() => {
    const w = window as any;
    w.__notifications = [];
    w.__asked = 0;
    class FakeNotification {
      static permission = "default";
      static requestPermission() {
        w.__asked += 1;
        FakeNotification.permission = "granted";
        return Promise.resolve("granted");
      }
      onclick: unknown = null;
      constructor(title: string, options: { body: string; tag: string }) {
        w.__notifications.push({ title, body: options.body, tag: options.tag });
      }
    }
    w.Notification = FakeNotification;
  });
  const server = await startServer({ WORKERS: "0" });
  const batch = await server.createBatch(1, "Nightly export");
  await openHome(page, server);
  const ask = page.getByRole("button", { name: "Notify me" });
  await expect(ask).toBeVisible();
  expect(await page.evaluate(() => (window as any).__asked)).toBe(0);

  await ask.click();
  await expect(page.getByTestId("notify-on")).toHaveText("Notifications on");
  expect(await page.evaluate(() => (window as any).__asked)).toBe(1);

  await finish(server, batch, ["done"]);
  await expect(page.getByTestId("toast")).toContainText("Nightly export completed");
  const shown = await page.evaluate(() => (window as any).__notifications);
  expect(shown).toEqual([{ title: "batchwatch", body: "Nightly export completed: 1 of 1 done", tag: batch.batch_id }]);
});
