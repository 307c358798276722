// Counts of the HTTP cache test suite's results, Sluice beside the published results that ship
// with the same suite checkout: required tests passed and failed (the suite's ⛔), optimal
// tests missed (⚠), and setup or harness failures. Dependencies are honoured as on
// cache-tests.fyi (a test whose dependency failed counts as neither).
//
// Usage: node cache_conformance_summary.mjs SUITE_DIR OUT.json TTL_MODE NAME=RESULTS.json...
import fs from 'fs'
import path from 'path'
import { pathToFileURL } from 'url'

const [suiteDir, out, ttlMode, ...runs] = process.argv.slice(2)
const load = (rel) => import(pathToFileURL(path.join(suiteDir, rel)).href)

// The npm package (0.4.x) and the repository lay the engine out differently.
const engine = fs.existsSync(path.join(suiteDir, 'test-engine'))
  ? await load('test-engine/lib/results.mjs')
  : await load('lib/display.mjs')
const suites = (await load('tests/index.mjs')).default
if (fs.existsSync(path.join(suiteDir, 'tests/surrogate-control.mjs')) &&
    !suites.some(s => s.id === 'surrogate-control')) {
  suites.push((await load('tests/surrogate-control.mjs')).default)
}
const { determineTestResult } = engine
// Result kinds by their symbol (the npm package does not export its table of them).
const kind = (r) => r[2]
const published = (await load('results/index.mjs')).default
  .filter(p => p.type === 'rev-proxy' || p.type === 'cdn')

function count (results) {
  const c = { passed: 0, failed: 0, optional_passed: 0, optional_missed: 0, setup_or_harness: 0, dependency: 0, failures: [] }
  for (const suite of suites) {
    for (const test of suite.tests) {
      const r = kind(determineTestResult(suites, test.id, results))
      const required = test.kind === 'required' || test.kind === undefined
      if (r === '✅') required ? c.passed++ : c.optional_passed++
      else if (r === '⛔️') { c.failed++; c.failures.push(test.id) }
      else if (r === '⚠️') c.optional_missed++
      else if (r === '⚪️') c.dependency++
      else if (['🔹', '⁉️', '↻'].includes(r)) {
        c.setup_or_harness++
        c.failures.push(`${test.id} (setup/harness)`)
      }
    }
  }
  return c
}

const rows = []
for (const run of runs) {
  const [name, file] = run.split('=')
  rows.push({ name, ...count(JSON.parse(fs.readFileSync(file, 'utf8'))) })
}
for (const p of published) {
  const file = path.join(suiteDir, 'results', p.file)
  if (!fs.existsSync(file)) continue
  rows.push({ name: `${p.name} ${p.version}`, published: true, ...count(JSON.parse(fs.readFileSync(file, 'utf8'))) })
}

console.log(`\n| cache | required passed | required failed | optimal passed | optimal missed | setup/harness | dependency failed |`)
console.log('|---|---:|---:|---:|---:|---:|---:|')
for (const r of rows) {
  console.log(`| ${r.name} | ${r.passed} | ${r.failed} | ${r.optional_passed} | ${r.optional_missed} | ${r.setup_or_harness} | ${r.dependency} |`)
}
const best = rows.filter(r => r.published).sort((a, b) => b.passed - a.passed)[0]
for (const r of rows.filter(r => !r.published)) {
  console.log(`\n${r.name}: ${r.passed} passed vs ${best ? `${best.passed} (${best.name}, the best published)` : 'n/a'}; failed required: ${r.failures.join(', ') || 'none'}`)
}
const pkg = JSON.parse(fs.readFileSync(path.join(suiteDir, 'package.json'), 'utf8'))
fs.mkdirSync(path.dirname(out), { recursive: true })
fs.writeFileSync(out, JSON.stringify({ suite: `${pkg.name} ${pkg.version}`, ttl_mode: ttlMode, rows }, null, 2))
console.log(`\nwritten to ${out}`)
