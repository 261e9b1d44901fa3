// A batchwatch server of a test's own: its own port, database and Redis prefix, so a test
// can kill it and start it again.
import { test as base } from "@playwright/test";
import { ChildProcess, execSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { bin, createUser } from "./accounts";

function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const srv = createServer();
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => done(port));
    });
    srv.on("error", fail);
  });
}

export class TestServer {
  private child?: ChildProcess;
  private workers?: ChildProcess;
  /** The token of this server's one user, which the helpers below send. */
  readonly token: string;
  private constructor(
    readonly url: string,
    private readonly port: number,
    private readonly dir: string,
    private readonly prefix: string,
    private readonly env: Record<string, string>,
  ) {
    this.token = createUser(this.databaseUrl, "watcher");
  }

  static async start(env: Record<string, string>): Promise<TestServer> {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), "batchwatch-live-"));
    const prefix = `e2e-live-${port}-${Date.now()}:`;
    const server = new TestServer(`http://127.0.0.1:${port}`, port, dir, prefix, env);
    await server.restart();
    return server;
  }

  private get databaseUrl(): string {
    return `sqlite://${this.dir}/live.db`;
  }

  private headers(): Record<string, string> {
    return { "content-type": "application/json", authorization: `Bearer ${this.token}` };
  }

  async restart(): Promise<void> {
    this.child = spawn(bin, [], {
      cwd: resolve(__dirname, "../.."),
      stdio: "ignore",
      env: {
        ...process.env,
        DATABASE_URL: this.databaseUrl,
        LEPTOS_SITE_ADDR: `127.0.0.1:${this.port}`,
        REDIS_PREFIX: this.prefix,
        RUST_LOG: "warn",
        SIGN_INS_PER_MINUTE: "100000",
        ...this.env,
      },
    });
    for (let i = 0; i < 200; i++) {
      try {
        if ((await fetch(`${this.url}/login`)).ok) return;
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error("batchwatch did not start");
  }

  /**
   * Starts a `batchwatch worker` process on this server's database and Redis: work begins
   * when the test says, after its page is live, however long the page took to hydrate.
   */
  startWorkers(env: Record<string, string>): void {
    this.workers = spawn(bin, ["worker"], {
      cwd: resolve(__dirname, "../.."),
      stdio: "ignore",
      env: {
        ...process.env,
        DATABASE_URL: this.databaseUrl,
        REDIS_PREFIX: this.prefix,
        RUST_LOG: "warn",
        WORKER_POLL_MS: "50",
        ...env,
      },
    });
  }

  /** Kills the process at once, as a crash would. */
  async kill(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGKILL");
    await exited;
  }

  async stop(): Promise<void> {
    await this.kill();
    this.workers?.kill("SIGKILL");
    rmSync(this.dir, { recursive: true, force: true });
    execSync(`redis-cli --scan --pattern '${this.prefix}*' | xargs -r redis-cli del`, { stdio: "ignore" });
  }

  async createBatch(items: number, name = `live ${Date.now()}`): Promise<any> {
    const res = await fetch(`${this.url}/api/batches`, {
      method: "POST",
      headers: this.headers(),
      body: JSON.stringify({ name, items: Array.from({ length: items }, (_, i) => `photo-${i + 1}.jpg`) }),
    });
    if (res.status !== 201) throw new Error(`create: ${res.status}`);
    return res.json();
  }

  async report(batch: any, item: number, status: string, error?: string): Promise<void> {
    const res = await fetch(`${this.url}/api/batches/${batch.batch_id}/items/${batch.items[item].id}/status`, {
      method: "POST",
      headers: this.headers(),
      body: JSON.stringify({ status, error }),
    });
    if (res.status !== 200) throw new Error(`report: ${res.status} ${await res.text()}`);
  }

  async get(batch: any): Promise<any> {
    return (await fetch(`${this.url}/api/batches/${batch.batch_id}`, { headers: this.headers() })).json();
  }
}

/** A test that starts servers of its own with `startServer(env)`; each is stopped after it. */
export const test = base.extend<{ startServer: (env: Record<string, string>) => Promise<TestServer> }>({
  startServer: async ({}, use) => {
    const started: TestServer[] = [];
    await use(async (env) => {
      const server = await TestServer.start(env);
      started.push(server);
      return server;
    });
    for (const server of started) await server.stop();
  },
});
