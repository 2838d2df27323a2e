// Latency runner for ONNX Runtime, in the protocol of autoprune's command meter
// ([latency] meter = "command"): it times the ONNX models given, interleaved, and prints one
// line per timed pass, "MODEL-INDEX SECONDS".
//
//   node runners/onnxruntime.js --models A.onnx[,B.onnx] --batch 1 --threads 1 --warmup 5 --runs 50
//
// Needs onnxruntime-node (ONNXRUNTIME_NODE_INSTALL=skip npm install onnxruntime-node@1.30.0,
// then NODE_PATH pointing at that node_modules). Inputs are random; each model's first input
// takes the batch size as its first dimension.
const ort = require('onnxruntime-node');

function flags(argv) {
  const f = { batch: 1, threads: 1, warmup: 5, runs: 50 };
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i].replace(/^--/, '');
    f[k] = k === 'models' ? argv[i + 1].split(',') : Number(argv[i + 1]);
  }
  if (!f.models || f.models.length === 0) throw new Error('--models A.onnx[,B.onnx] is required');
  return f;
}

async function open(path, f) {
  const session = await ort.InferenceSession.create(path, {
    intraOpNumThreads: f.threads, interOpNumThreads: 1, executionMode: 'sequential',
  });
  const meta = session.inputMetadata ? session.inputMetadata[0] : undefined;
  let dims = meta && meta.shape ? meta.shape.slice() : undefined;
  if (!dims) throw new Error(`${path}: cannot read the input shape`);
  dims = dims.map((d, i) => (i === 0 || typeof d !== 'number' ? f.batch : d));
  const n = dims.reduce((a, b) => a * b, 1);
  const data = Float32Array.from({ length: n }, () => Math.random());
  const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', data, dims) };
  return { session, feeds };
}

async function main() {
  const f = flags(process.argv.slice(2));
  const models = [];
  for (const p of f.models) models.push(await open(p, f));
  for (let w = 0; w < f.warmup; w++) for (const m of models) await m.session.run(m.feeds);
  const out = [];
  for (let r = 0; r < f.runs; r++) {
    for (let i = 0; i < models.length; i++) {
      const t0 = process.hrtime.bigint();
      await models[i].session.run(models[i].feeds);
      out.push(`${i} ${(Number(process.hrtime.bigint() - t0) / 1e9).toFixed(9)}`);
    }
  }
  process.stdout.write(`# onnxruntime-node ${require('onnxruntime-node/package.json').version}\n${out.join('\n')}\n`);
}

main().catch((e) => { console.error(e.message || e); process.exit(1); });
