// Users for the tests, made the way an operator makes them (`batchwatch user create`), and
// a `test` whose page is signed in through /login as a user of its own.
import { APIRequestContext, expect, Page, test as base } from "@playwright/test";
import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { resolve } from "node:path";

export const bin = process.env.BATCHWATCH_BIN ?? resolve(__dirname, "../../target/release/batchwatch");

/** Creates a user in the server's database; returns their token. */
export function createUser(databaseUrl: string, name: string, worker = false): string {
  const out = execFileSync(bin, ["user", "create", name, ...(worker ? ["--worker"] : [])], {
    env: { ...process.env, DATABASE_URL: databaseUrl, RUST_LOG: "warn" },
    stdio: ["ignore", "pipe", "ignore"],
  }).toString();
  const token = out.match(/^token:\s+(bw_[0-9a-f]+)$/m)?.[1];
  if (!token) throw new Error(`no token in: ${out}`);
  return token;
}

export const e2eDatabaseUrl = () => `sqlite://${process.env.E2E_DATA_DIR}/e2e.db`;

/** A name no other test uses. */
export const uniqueName = (what: string) => `${what}-${randomUUID().slice(0, 8)}`;

/**
 * Waits until the wasm has taken over the page: clicks before hydration would be lost. Without
 * JavaScript there is nothing to wait for. The first page of a run also waits for the browser
 * to compile the wasm while other tests start.
 */
export async function hydrated(page: Page, javaScriptEnabled = true) {
  if (javaScriptEnabled) {
    await expect(page.locator("body")).toHaveAttribute("data-hydrated", "true", { timeout: 30_000 });
  }
}

/** Signs in through the form, as a person does; ends on the page it was sent to. */
export async function signIn(page: Page, token: string, base = "") {
  await page.goto(`${base}/login`);
  await page.getByLabel("Token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page.getByTestId("viewer")).toBeVisible();
}

/**
 * Signs in at `at.url` with `at.token` and opens `path` there, live. Marks the document, so
 * that `expectNoReload` can tell it was never reloaded.
 */
export async function openLive(page: Page, at: { url: string; token: string }, path: string) {
  await signIn(page, at.token, at.url);
  await page.goto(`${at.url}${path}`);
  await hydrated(page);
  await expect(page.getByTestId("live")).toHaveAttribute("data-state", "live");
  // Set once: a reload would lose it.
  await page.evaluate(() => ((window as any).__sameDocument = true));
}

export async function expectNoReload(page: Page) {
  expect(await page.evaluate(() => (window as any).__sameDocument)).toBe(true);
}

/** Each test: a fresh user, its token, an API client sending it, and a page signed in. */
export const test = base.extend<{ user: { name: string; token: string }; api: APIRequestContext }>({
  user: async ({}, use) => {
    const name = uniqueName("user");
    await use({ name, token: createUser(e2eDatabaseUrl(), name) });
  },
  api: async ({ playwright, baseURL, user }, use) => {
    const api = await playwright.request.newContext({
      baseURL,
      extraHTTPHeaders: { authorization: `Bearer ${user.token}` },
    });
    await use(api);
    await api.dispose();
  },
  page: async ({ page, user }, use) => {
    await signIn(page, user.token);
    await use(page);
  },
});

export { expect };
