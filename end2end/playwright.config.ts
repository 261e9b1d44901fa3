import { defineConfig } from "@playwright/test";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

// One private database per run, shared by the worker processes through the environment and
// removed by global-teardown.ts.
process.env.E2E_DATA_DIR ??= mkdtempSync(join(tmpdir(), "batchwatch-e2e-"));
process.env.E2E_REDIS_PREFIX ??= `e2e-${process.pid}-${Date.now()}:`;
const port = Number(process.env.E2E_PORT ?? 3107);
const baseURL = `http://127.0.0.1:${port}`;
const bin = process.env.BATCHWATCH_BIN ?? resolve(__dirname, "../target/release/batchwatch");

export const chromium = {
  executablePath: "/usr/bin/chromium",
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
};

export default defineConfig({
  testDir: "./tests",
  outputDir: "./test-results",
  globalTeardown: "./global-teardown.ts",
  timeout: 30_000,
  expect: { timeout: 10_000 },
  fullyParallel: true,
  forbidOnly: true,
  workers: 2,
  reporter: [["list"]],
  use: {
    baseURL,
    launchOptions: chromium,
    screenshot: "only-on-failure",
  },
  projects: [
    { name: "js", use: { javaScriptEnabled: true }, grepInvert: /@bench/ },
    // The same pages with JavaScript off: the server's HTML alone must work.
    { name: "no-js", use: { javaScriptEnabled: false }, grep: /@no-js/ },
    // Measurements that print figures and take minutes: `npx playwright test --project=bench`.
    { name: "bench", use: { javaScriptEnabled: true }, grep: /@bench/ },
  ],
  webServer: {
    command: bin,
    cwd: resolve(__dirname, ".."),
    url: `${baseURL}/login`,
    timeout: 60_000,
    reuseExistingServer: false,
    stdout: "ignore",
    stderr: "pipe",
    env: {
      DATABASE_URL: `sqlite://${process.env.E2E_DATA_DIR}/e2e.db`,
      LEPTOS_SITE_ADDR: `127.0.0.1:${port}`,
      REDIS_PREFIX: process.env.E2E_REDIS_PREFIX,
      // These pages must stay still: the live specs start servers with workers of their own.
      WORKERS: "0",
      // Every test signs in from 127.0.0.1.
      SIGN_INS_PER_MINUTE: "100000",
      RUST_LOG: "warn",
    },
  },
});
