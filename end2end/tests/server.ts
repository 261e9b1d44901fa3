// A batchwatch server of a test's own: its own port, database and Redis prefix, so a test
// can kill it and start it again.
import { test as base } from "@playwright/test";
import { ChildProcess, execSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { connect, createServer, Socket } from "node:net";
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

/** What servers of one deployment share: the database, the Redis prefix, the user. */
export interface Shared {
  databaseUrl: string;
  prefix: string;
  token: string;
}

export class TestServer {
  private child?: ChildProcess;
  private workers: ChildProcess[] = [];
  private constructor(
    readonly url: string,
    readonly port: number,
    private readonly dir: string,
    /** Pass to `startServer` for a second server of the same deployment. */
    readonly shared: Shared,
    private readonly env: Record<string, string>,
  ) {}

  static async start(env: Record<string, string>, shared?: Omit<Shared, "token"> | Shared): Promise<TestServer> {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), "batchwatch-live-"));
    const databaseUrl = shared?.databaseUrl ?? `sqlite://${dir}/live.db`;
    const prefix = shared?.prefix ?? `e2e-live-${port}-${Date.now()}:`;
    const token = shared && "token" in shared ? shared.token : createUser(databaseUrl, "watcher");
    const server = new TestServer(`http://127.0.0.1:${port}`, port, dir, { databaseUrl, prefix, token }, env);
    await server.restart();
    return server;
  }

  /** The token of this deployment's one user, which the helpers below send. */
  get token(): string {
    return this.shared.token;
  }

  private get databaseUrl(): string {
    return this.shared.databaseUrl;
  }

  private get prefix(): string {
    return this.shared.prefix;
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
  startWorkers(env: Record<string, string>): ChildProcess {
    const workers = spawn(bin, ["worker"], {
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
    this.workers.push(workers);
    return workers;
  }

  /** Kills the process at once, as a crash would. */
  async kill(): Promise<void> {
    await signal(this.child, "SIGKILL");
  }

  /** Stops it as an orchestrator does (SIGTERM); resolves once it has exited. */
  async terminate(): Promise<void> {
    await signal(this.child, "SIGTERM");
  }

  async stop(): Promise<void> {
    await this.kill();
    for (const workers of this.workers) await signal(workers, "SIGKILL");
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

  async appendItems(batch: any, names: string[]): Promise<void> {
    const res = await fetch(`${this.url}/api/batches/${batch.batch_id}/items`, {
      method: "POST",
      headers: this.headers(),
      body: JSON.stringify({ items: names }),
    });
    if (res.status !== 200) throw new Error(`append: ${res.status} ${await res.text()}`);
  }

  /** The batch's summary, and its first 500 items. */
  async get(batch: any): Promise<any> {
    const url = `${this.url}/api/batches/${batch.batch_id}`;
    const summary = await (await fetch(url, { headers: this.headers() })).json();
    const page = await (await fetch(`${url}/items?limit=500`, { headers: this.headers() })).json();
    return { ...summary, items: page.items };
  }
}

/** Sends `sig` to a process and waits for it to exit (at once when it already has). */
export async function signal(child: ChildProcess | undefined, sig: NodeJS.Signals): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once("exit", r));
  child.kill(sig);
  await exited;
}

/** A PostgreSQL database of the test's own (the local server, trust auth). */
export function postgresDatabase(): { url: string; drop: () => void } {
  const name = `bw_e2e_${process.pid}_${Date.now()}_${Math.floor(Math.random() * 1e6)}`;
  const admin = "postgres://postgres@127.0.0.1:5432/postgres";
  execSync(`psql "${admin}" -qc "CREATE DATABASE ${name}"`, { stdio: "ignore" });
  return {
    url: `postgres://postgres@127.0.0.1:5432/${name}`,
    drop: () => execSync(`psql "${admin}" -qc "DROP DATABASE IF EXISTS ${name} WITH (FORCE)"`, { stdio: "ignore" }),
  };
}

/** A `redis-server` of the test's own, which it can kill and start again on the same port. It
 * keeps an append-only file, as the README advises where sessions must outlive a restart. */
export class PrivateRedis {
  private child?: ChildProcess;
  private constructor(
    readonly port: number,
    private readonly dir: string,
  ) {}

  static async start(): Promise<PrivateRedis> {
    const redis = new PrivateRedis(await freePort(), mkdtempSync(join(tmpdir(), "batchwatch-redis-")));
    await redis.restart();
    return redis;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  async restart(): Promise<void> {
    this.child = spawn(
      "redis-server",
      ["--port", String(this.port), "--bind", "127.0.0.1", "--dir", this.dir, "--save", "", "--appendonly", "yes", "--appendfsync", "always"],
      { stdio: "ignore" },
    );
    for (let i = 0; i < 100; i++) {
      try {
        execSync(`redis-cli -p ${this.port} ping`, { stdio: "ignore" });
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    throw new Error("redis-server did not start");
  }

  async kill(): Promise<void> {
    await signal(this.child, "SIGKILL");
  }

  async stop(): Promise<void> {
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A TCP proxy on a port of its own: each connection goes to the first server that takes it,
 * as a load balancer's health checks would send it. */
export async function startProxy(upstreams: number[]): Promise<{ url: string; close: () => void }> {
  const sockets = new Set<Socket>();
  const proxy = createServer((client) => {
    sockets.add(client);
    client.on("close", () => sockets.delete(client));
    const tryFrom = (i: number) => {
      if (i >= upstreams.length) return client.destroy();
      const upstream = connect(upstreams[i], "127.0.0.1");
      upstream.once("error", () => tryFrom(i + 1));
      upstream.once("connect", () => {
        upstream.removeAllListeners("error");
        sockets.add(upstream);
        upstream.on("close", () => sockets.delete(upstream));
        client.pipe(upstream).pipe(client);
        const end = () => {
          client.destroy();
          upstream.destroy();
        };
        client.on("error", end);
        upstream.on("error", end);
        client.on("close", end);
        upstream.on("close", end);
      });
    };
    tryFrom(0);
  });
  const port = await new Promise<number>((done) =>
    proxy.listen(0, "127.0.0.1", () => done((proxy.address() as { port: number }).port)),
  );
  return {
    url: `http://127.0.0.1:${port}`,
    close: () => {
      proxy.close();
      for (const socket of sockets) socket.destroy();
    },
  };
}

/** A test that starts servers of its own with `startServer(env)`; each is stopped after it. */
export const test = base.extend<{
  startServer: (env: Record<string, string>, shared?: Omit<Shared, "token"> | Shared) => Promise<TestServer>;
}>({
  startServer: async ({}, use) => {
    const started: TestServer[] = [];
    await use(async (env, shared) => {
      const server = await TestServer.start(env, shared);
      started.push(server);
      return server;
    });
    for (const server of started) await server.stop();
  },
});
