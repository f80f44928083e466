// The committed dist/ (which authd embeds) is what tsc makes of src/.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { test } from "node:test";

import { kitDir } from "./helpers.mjs";

test("dist/ is up to date with src/", async () => {
  const out = await mkdtemp(path.join(tmpdir(), "authd-dist-"));
  try {
    const tsc = path.join(kitDir, "node_modules", "typescript", "bin", "tsc");
    execFileSync(process.execPath, [tsc, "-p", "tsconfig.json", "--outDir", out], { cwd: kitDir, stdio: "inherit" });
    const built = (await readdir(out)).sort();
    assert.deepEqual((await readdir(path.join(kitDir, "dist"))).sort(), built);
    for (const file of built) {
      const fresh = await readFile(path.join(out, file), "utf8");
      const committed = await readFile(path.join(kitDir, "dist", file), "utf8");
      assert.equal(committed, fresh, `dist/${file} is stale: run npm run build`);
    }
  } finally {
    await rm(out, { recursive: true, force: true });
  }
});
