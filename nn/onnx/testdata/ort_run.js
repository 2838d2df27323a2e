// Runs an ONNX model with ONNX Runtime (npm onnxruntime-node) on a float32 input and prints
// the output as JSON: node ort_run.js MODEL.onnx INPUT.f32 N C H W
// INPUT.f32 holds N*C*H*W little-endian float32 values.
const ort = require('onnxruntime-node');
const fs = require('fs');

async function main() {
  const [model, input, ...dims] = process.argv.slice(2);
  const shape = dims.map(Number);
  const buf = fs.readFileSync(input);
  const data = new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4);
  const session = await ort.InferenceSession.create(model, { intraOpNumThreads: 1 });
  const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', data, shape) };
  const out = await session.run(feeds);
  const y = out[session.outputNames[0]];
  process.stdout.write(JSON.stringify({ dims: y.dims, data: Array.from(y.data) }));
}

main().catch((e) => { console.error(e.message || e); process.exit(1); });
