import { expect, Page } from "@playwright/test";
import { readFileSync } from "node:fs";
import { expectNoReload, hydrated, openLive, test as signedIn } from "./accounts";
import { test } from "./server";

test.describe.configure({ timeout: 60_000 });

const rows = (page: Page) => page.getByTestId("item");
const tabCount = (page: Page, tab: string) => page.getByTestId(`tab-${tab}`).getByTestId("tab-count");

test("tabs, search and pages follow the URL, and rows come and go live", async ({ page, startServer }) => {
  const server = await startServer({ WORKERS: "0" });
  const batch = await server.createBatch(250, "Scans");
  const id = batch.batch_id;
  await openLive(page, server, `/batches/${id}`);

  // One page of the batch, and the pages around it.
  await expect(rows(page)).toHaveCount(100);
  await expect(tabCount(page, "all")).toHaveText("250");
  await page.getByTestId("next").click();
  await expect(page).toHaveURL(`${server.url}/batches/${id}?after=99`);
  await expect(rows(page).first()).toContainText("photo-101.jpg");
  await expect(rows(page)).toHaveCount(100);
  await page.getByTestId("prev").click();
  await expect(page).toHaveURL(`${server.url}/batches/${id}?before=100`);
  await expect(rows(page).first()).toContainText("photo-1.jpg");

  // Live counts on the tabs.
  for (const i of [4, 119, 129]) {
    await server.report(batch, i, "processing");
    await server.report(batch, i, "failed", `scanner jammed on page ${i + 1}`);
  }
  await expect(tabCount(page, "failed")).toHaveText("3");

  await page.getByTestId("tab-failed").click();
  await expect(page).toHaveURL(`${server.url}/batches/${id}?status=failed`);
  await expect(page.getByTestId("tab-failed")).toHaveAttribute("aria-selected", "true");
  await expect(rows(page)).toHaveCount(3);
  await expect(page.getByText("scanner jammed on page 120")).toBeVisible();

  // A retried item leaves the Failed view; a new failure enters it in its place.
  await server.report(batch, 119, "pending");
  await expect(rows(page)).toHaveCount(2);
  await server.report(batch, 6, "processing");
  await server.report(batch, 6, "failed", "lid open");
  await expect(rows(page)).toHaveCount(3);
  expect(await rows(page).getByTestId("name").allTextContents()).toEqual([
    "photo-5.jpg",
    "photo-7.jpg",
    "photo-130.jpg",
  ]);
  await expect(tabCount(page, "failed")).toHaveText("3");

  // Search within the tab.
  await page.getByRole("searchbox", { name: "Find items by name" }).fill("photo-13");
  await page.getByRole("button", { name: "Find" }).click();
  await expect(page).toHaveURL(`${server.url}/batches/${id}?status=failed&q=photo-13`);
  await expect(rows(page)).toHaveCount(1);
  await expect(rows(page)).toContainText("photo-130.jpg");
  await expectNoReload(page);
});

signedIn("a link reproduces the view, with JavaScript off too @no-js", async ({ page, api, javaScriptEnabled }) => {
  const items = Array.from({ length: 30 }, (_, i) => `invoice-${i + 1}.pdf`);
  const batch = await (await api.post("/api/batches", { data: { name: "Invoices", items } })).json();
  for (const i of [2, 11, 12, 20]) {
    const report = (status: string, error?: string) =>
      api.post(`/api/batches/${batch.batch_id}/items/${batch.items[i].id}/status`, { data: { status, error } });
    expect((await report("processing")).status()).toBe(200);
    expect((await report("failed", "unreadable")).status()).toBe(200);
  }
  await page.goto(`/batches/${batch.batch_id}?status=failed&q=invoice-1`);
  await hydrated(page, javaScriptEnabled);
  await expect(rows(page)).toHaveCount(2);
  await expect(page.getByRole("searchbox", { name: "Find items by name" })).toHaveValue("invoice-1");

  // The tabs keep the search; the form keeps the tab.
  await page.getByTestId("tab-all").click();
  await expect(page).toHaveURL(/\/batches\/[^?]+\?q=invoice-1$/);
  await expect(rows(page)).toHaveCount(11);
  await page.getByTestId("tab-failed").click();
  await page.getByRole("searchbox", { name: "Find items by name" }).fill("invoice-2");
  await page.getByRole("button", { name: "Find" }).click();
  await expect(page).toHaveURL(/\?status=failed&q=invoice-2$/);
  await expect(rows(page)).toHaveCount(1);
  await expect(rows(page)).toContainText("invoice-21.pdf");
});

signedIn("the export buttons download every item, as the API lists them", async ({ page, api }) => {
  const items = Array.from({ length: 250 }, (_, i) => `record-${i + 1}.json`);
  const batch = await (await api.post("/api/batches", { data: { name: "Records", items } })).json();
  const report = (i: number, status: string, error?: string) =>
    api.post(`/api/batches/${batch.batch_id}/items/${batch.items[i].id}/status`, { data: { status, error } });
  await report(7, "processing");
  await report(7, "failed", "bad, \"quoted\" JSON");
  await page.goto(`/batches/${batch.batch_id}`);
  await hydrated(page);

  const [csv] = await Promise.all([page.waitForEvent("download"), page.getByTestId("export-csv").click()]);
  expect(csv.suggestedFilename()).toBe(`batch-${batch.batch_id}.csv`);
  const lines = readFileSync(await csv.path(), "utf8").trim().split("\r\n");
  expect(lines).toHaveLength(251);
  expect(lines[0]).toBe("id,name,status,error,attempts,updated_at");
  expect(lines[8]).toContain(`${batch.items[7].id},record-8.json,failed,"bad, ""quoted"" JSON",1,`);

  const [ndjson] = await Promise.all([page.waitForEvent("download"), page.getByTestId("export-ndjson").click()]);
  const rows = readFileSync(await ndjson.path(), "utf8").trim().split("\n").map((l) => JSON.parse(l));
  const listed = (await (await api.get(`/api/batches/${batch.batch_id}/items?limit=500`)).json()).items;
  expect(rows.map((r: any) => [r.id, r.name, r.status, r.error ?? null, r.attempts])).toEqual(
    listed.map((i: any) => [i.id, i.name, i.status, i.error, i.attempts]),
  );
});

test("the status tabs are one Tab stop: the arrow keys move along them, Enter opens one", async ({
  page,
  startServer,
}) => {
  const server = await startServer({ WORKERS: "0" });
  const batch = await server.createBatch(3, "Keys");
  await openLive(page, server, `/batches/${batch.batch_id}`);
  const tab = (key: string) => page.getByTestId(`tab-${key}`);
  await expect(tab("all")).toHaveAttribute("tabindex", "0");
  await expect(tab("pending")).toHaveAttribute("tabindex", "-1");
  await tab("all").focus();
  await page.keyboard.press("ArrowRight");
  await expect(tab("pending")).toBeFocused();
  await page.keyboard.press("End");
  await expect(tab("cancelled")).toBeFocused();
  await page.keyboard.press("ArrowRight");
  await expect(tab("all")).toBeFocused();
  await page.keyboard.press("ArrowLeft");
  await expect(tab("cancelled")).toBeFocused();
  await page.keyboard.press("Home");
  await page.keyboard.press("ArrowRight");
  await page.keyboard.press("Enter");
  await expect(page).toHaveURL(/\?status=pending$/);
  await expect(tab("pending")).toHaveAttribute("aria-selected", "true");
  await expect(tab("pending")).toHaveAttribute("tabindex", "0");
  await expect(page.getByRole("tabpanel")).toHaveAttribute("aria-labelledby", "tab-pending");
  await expect(rows(page)).toHaveCount(3);
});
