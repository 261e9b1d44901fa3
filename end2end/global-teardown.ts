import { execSync } from "node:child_process";
import { rmSync } from "node:fs";

export default function teardown() {
  if (process.env.E2E_DATA_DIR) {
    rmSync(process.env.E2E_DATA_DIR, { recursive: true, force: true });
  }
  // Leave nothing behind in the shared Redis.
  if (process.env.E2E_REDIS_PREFIX) {
    execSync(`redis-cli --scan --pattern '${process.env.E2E_REDIS_PREFIX}*' | xargs -r redis-cli del`, {
      stdio: "ignore",
    });
  }
}
