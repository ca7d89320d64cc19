// compare_ort.mjs — ONNX Runtime's side of bench/compare.sh: times one ONNX model with
// onnxruntime-node (CPU execution provider) and prints one JSON line.
//
// usage: node bench/compare_ort.mjs MODEL.onnx [--opt all|basic|extended|disabled]
//            [--threads T] [--iters N] [--warmup W] [--batch B]
// The inputs are random, with their shapes from the model; symbolic dimensions take --batch
// (default 1).  intraOpNumThreads = T and interOpNumThreads = 1, sequential execution: the
// same cores kiln gets.  Install the package with
//   (cd bench && ONNXRUNTIME_NODE_INSTALL=skip npm install)
// (without the variable its install script tries to download GPU parts and fails).
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

function parseArgs(argv) {
  const o = { model: null, opt: 'all', threads: 2, iters: 10, warmup: 3, batch: 1 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--opt') o.opt = val();
    else if (a === '--threads') o.threads = parseInt(val(), 10);
    else if (a === '--iters') o.iters = parseInt(val(), 10);
    else if (a === '--warmup') o.warmup = parseInt(val(), 10);
    else if (a === '--batch') o.batch = parseInt(val(), 10);
    else if (a.startsWith('-')) throw new Error(`unknown option ${a}`);
    else o.model = a;
  }
  if (!o.model) throw new Error('no model given');
  return o;
}

// Deterministic uniform [-1, 1) values (the numbers do not change the time).
function fillRandom(n) {
  const a = new Float32Array(n);
  let s = 0x2545f491;
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s ^= s >>> 17; s ^= s << 5;
    a[i] = ((s >>> 0) / 4294967296) * 2 - 1;
  }
  return a;
}

function makeFeeds(ort, session, batch) {
  const feeds = {};
  for (const meta of session.inputMetadata) {
    if (!meta.isTensor) throw new Error(`input ${meta.name} is not a tensor`);
    const dims = meta.shape.map((d) => (typeof d === 'number' && d > 0 ? d : batch));
    const n = dims.reduce((x, y) => x * y, 1);
    if (meta.type === 'float32') feeds[meta.name] = new ort.Tensor('float32', fillRandom(n), dims);
    else if (meta.type === 'int64') feeds[meta.name] = new ort.Tensor('int64', new BigInt64Array(n), dims);
    else if (meta.type === 'int32') feeds[meta.name] = new ort.Tensor('int32', new Int32Array(n), dims);
    else if (meta.type === 'bool') feeds[meta.name] = new ort.Tensor('bool', new Uint8Array(n), dims);
    else throw new Error(`input ${meta.name}: unsupported type ${meta.type}`);
  }
  return feeds;
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  let ort;
  try {
    ort = require('onnxruntime-node');
  } catch (err) {
    console.error(`compare_ort: onnxruntime-node is not installed (${err.code || err.message}); ` +
                  'run: (cd bench && ONNXRUNTIME_NODE_INSTALL=skip npm install)');
    process.exit(3);
  }
  const t0 = process.hrtime.bigint();
  const session = await ort.InferenceSession.create(o.model, {
    executionProviders: ['cpu'],
    graphOptimizationLevel: o.opt,
    intraOpNumThreads: o.threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
  });
  const createMs = Number(process.hrtime.bigint() - t0) / 1e6;
  const feeds = makeFeeds(ort, session, o.batch);
  const times = [];
  const cpu = []; // process CPU time (all threads, user + system) per run
  for (let i = 0; i < o.warmup + o.iters; i++) {
    const s = process.hrtime.bigint();
    const c = process.cpuUsage();
    const out = await session.run(feeds);
    const ms = Number(process.hrtime.bigint() - s) / 1e6;
    const dc = process.cpuUsage(c);
    for (const k of Object.keys(out)) out[k].dispose?.();
    if (i >= o.warmup) {
      times.push(ms);
      cpu.push((dc.user + dc.system) / 1e3);
    }
  }
  const med = (a) => {
    a.sort((x, y) => x - y);
    const n = a.length;
    return n % 2 ? a[(n - 1) / 2] : 0.5 * (a[n / 2 - 1] + a[n / 2]);
  };
  const median = med(times);
  console.log(JSON.stringify({
    runtime: `ort-${o.opt}`, median_ms: median, min_ms: times[0], cpu_median_ms: med(cpu),
    threads: o.threads,
    batch: o.batch, create_ms: createMs, ort: ort.env.versions?.node ?? 'unknown',
  }));
  await session.release?.();
}

main().catch((err) => {
  console.error(`compare_ort: ${err.message}`);
  process.exit(1);
});
