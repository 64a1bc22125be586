#!/usr/bin/env node
// Compiles contracts/TestToken.sol with solc-js into chain/TestToken.json (abi, bytecode,
// compiler version, sha256 of every source). Run: node scripts/build_token.js [--check]
// --check rebuilds in memory and exits 1 if the committed artifact differs.
"use strict";

const crypto = require("crypto");
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const ROOT = path.resolve(__dirname, "..");
const MAIN = "contracts/TestToken.sol";
const CONTRACT = "TestToken";
const OUT = path.join(ROOT, "chain", "TestToken.json");
const EVM_VERSION = "cancun";

function sha256(text) {
  return crypto.createHash("sha256").update(text, "utf8").digest("hex");
}

// Resolves imports: "@openzeppelin/..." from node_modules, everything else from the repo.
function findImport(importPath) {
  const candidates = importPath.startsWith("@")
    ? [path.join(ROOT, "node_modules", importPath)]
    : [path.join(ROOT, importPath)];
  for (const file of candidates) {
    if (fs.existsSync(file)) {
      const contents = fs.readFileSync(file, "utf8");
      seen[importPath] = sha256(contents);
      return { contents };
    }
  }
  return { error: `File not found: ${importPath}` };
}

const seen = {};

function build() {
  const mainSource = fs.readFileSync(path.join(ROOT, MAIN), "utf8");
  seen[MAIN] = sha256(mainSource);
  const input = {
    language: "Solidity",
    sources: { [MAIN]: { content: mainSource } },
    settings: {
      optimizer: { enabled: true, runs: 200 },
      evmVersion: EVM_VERSION,
      outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
    },
  };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImport }));
  const errors = (output.errors || []).filter((e) => e.severity === "error");
  for (const e of output.errors || []) {
    process.stderr.write(`${e.formattedMessage || e.message}\n`);
  }
  if (errors.length > 0) {
    process.exit(1);
  }
  const contract = output.contracts[MAIN][CONTRACT];
  const sources = {};
  for (const key of Object.keys(seen).sort()) {
    sources[key] = seen[key];
  }
  const artifact = {
    contractName: CONTRACT,
    sourceName: MAIN,
    compiler: {
      name: "solc-js",
      version: solc.version(),
      evmVersion: EVM_VERSION,
      optimizer: { enabled: true, runs: 200 },
    },
    sources,
    abi: contract.abi,
    bytecode: "0x" + contract.evm.bytecode.object,
  };
  return JSON.stringify(artifact, null, 2) + "\n";
}

const text = build();
if (process.argv.includes("--check")) {
  const current = fs.existsSync(OUT) ? fs.readFileSync(OUT, "utf8") : "";
  if (current !== text) {
    process.stderr.write(`${path.relative(ROOT, OUT)} is stale: run node scripts/build_token.js\n`);
    process.exit(1);
  }
  process.stdout.write(`${path.relative(ROOT, OUT)} is up to date\n`);
} else {
  fs.mkdirSync(path.dirname(OUT), { recursive: true });
  fs.writeFileSync(OUT, text);
  process.stdout.write(`wrote ${path.relative(ROOT, OUT)}\n`);
}
