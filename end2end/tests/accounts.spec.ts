import { expect, test as plain } from "@playwright/test";
import { createUser, e2eDatabaseUrl, signIn, test, uniqueName } from "./accounts";

plain("signed out, a page sends you to /login and back after signing in @no-js", async ({ page }) => {
  const token = createUser(e2eDatabaseUrl(), uniqueName("returning"));
  await page.goto("/batches/67e55044-10b1-426f-9247-bb680e5fe0c8?from=mail");
  await expect(page).toHaveURL(/\/login\?next=/);
  await page.getByLabel("Token").fill(token);
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page).toHaveURL(/\/batches\/67e55044-10b1-426f-9247-bb680e5fe0c8\?from=mail$/);
  await expect(page.getByRole("heading", { level: 1 })).toHaveText("Not found");
});

plain("a wrong token is refused with a message @no-js", async ({ page }) => {
  await page.goto("/login");
  await page.getByLabel("Token").fill("bw_not-a-token");
  await page.getByRole("button", { name: "Sign in" }).click();
  await expect(page).toHaveURL(/\/login\?error=invalid/);
  await expect(page.getByRole("alert")).toHaveText("That token is not valid, or it was revoked.");
  expect((await page.context().cookies()).filter((c) => c.name === "bw_session")).toEqual([]);
});

test("each user sees only their own batches; another's batch is the 404 page", async ({ page, api, user, browser }) => {
  const mine = `mine ${Date.now()}`;
  const created = await api.post("/api/batches", { data: { name: mine, items: ["a.jpg"] } });
  expect(created.status()).toBe(201);
  const batch = await created.json();

  // A second person, in a browser context of their own.
  const other = await browser.newContext();
  try {
    const theirPage = await other.newPage();
    await signIn(theirPage, createUser(e2eDatabaseUrl(), uniqueName("other")));
    await expect(theirPage.getByTestId("viewer")).not.toHaveText(user.name);
    await expect(theirPage.getByTestId("empty")).toBeVisible();
    const response = await theirPage.goto(`/batches/${batch.batch_id}`);
    expect(response?.status()).toBe(404);
    await expect(theirPage.getByRole("heading", { level: 1 })).toHaveText("Not found");
    await expect(theirPage.getByText(mine)).toHaveCount(0);
    const stream = await theirPage.request.get(`/api/batches/${batch.batch_id}/stream`);
    expect(stream.status()).toBe(404);
  } finally {
    await other.close();
  }

  await page.goto("/");
  await expect(page.getByTestId("viewer")).toHaveText(user.name);
  await expect(page.getByTestId("batch-row")).toHaveCount(1);
  await expect(page.getByTestId("batch-row")).toContainText(mine);
});

test("signing out ends the session @no-js", async ({ page }) => {
  await page.goto("/");
  await page.getByRole("button", { name: "Sign out" }).click();
  await expect(page).toHaveURL(/\/login$/);
  await page.goto("/");
  await expect(page).toHaveURL(/\/login\?next=%2F$/);
});

plain("a sign-in link names its account and signs in only on a click", async ({ page }) => {
  const name = uniqueName("linked");
  const token = createUser(e2eDatabaseUrl(), name);
  await page.goto(`/login#token=${token}`);
  const confirm = page.getByTestId("link-account");
  await expect(confirm).toContainText(`This link signs you in as ${name}.`, { timeout: 30_000 });
  expect(page.url()).not.toContain(token);
  // Nothing happened on its own: no session yet.
  await page.waitForTimeout(500);
  expect((await page.context().cookies()).filter((c) => c.name === "bw_session")).toEqual([]);
  await confirm.getByRole("button", { name: `Sign in as ${name}` }).click();
  await expect(page.getByTestId("viewer")).toHaveText(name);
  await page.goBack();
  expect(page.url()).not.toContain(token);
});

test("a link into someone else's account never replaces a session by itself", async ({ page, user }) => {
  const other = uniqueName("sender");
  const token = createUser(e2eDatabaseUrl(), other);
  await page.goto(`/login#token=${token}`);
  const confirm = page.getByTestId("link-account");
  await expect(confirm).toContainText(`This link signs you in as ${other}.`, { timeout: 30_000 });
  await expect(page.getByTestId("link-current")).toContainText(`You are signed in as ${user.name}`);
  await page.waitForTimeout(500);
  await page.goto("/");
  await expect(page.getByTestId("viewer")).toHaveText(user.name);
});

plain("a sign-in link with a bad token says so and signs nobody in", async ({ page }) => {
  await page.goto("/login#token=bw_not-a-token");
  await expect(page.getByText("This sign-in link's token is not valid")).toBeVisible({ timeout: 30_000 });
  expect((await page.context().cookies()).filter((c) => c.name === "bw_session")).toEqual([]);
});
