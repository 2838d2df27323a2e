// Test accuracy of an ONNX model in ONNX Runtime, on NumPy arrays written by make_model.py:
//   node examples/pytorch/ort_accuracy.js MODEL.onnx test_images.npy test_labels.npy
// Images are uint8 N x H x W, scaled to [0, 1] like autoprune's image folders; labels int64.
const ort = require('onnxruntime-node');
const fs = require('fs');

function npy(path) {
  const b = fs.readFileSync(path);
  const hlen = b.readUInt16LE(8);
  const header = b.toString('latin1', 10, 10 + hlen);
  const descr = /'descr':\s*'([^']*)'/.exec(header)[1];
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header)[1].split(',').filter((s) => s.trim()).map(Number);
  const data = b.subarray(10 + hlen);
  if (descr === '|u1') return { shape, data: Uint8Array.from(data) };
  if (descr === '<i8') return { shape, data: Array.from({ length: data.length / 8 }, (_, i) => Number(data.readBigInt64LE(8 * i))) };
  throw new Error(`${path}: element type ${descr}`);
}

async function main() {
  const [model, imagesPath, labelsPath] = process.argv.slice(2);
  const images = npy(imagesPath);
  const labels = npy(labelsPath);
  const [n, h, w] = images.shape;
  const session = await ort.InferenceSession.create(model, { intraOpNumThreads: 1 });
  let correct = 0;
  for (let s = 0; s < n; s += 500) {
    const m = Math.min(500, n - s);
    const x = new Float32Array(m * h * w);
    for (let i = 0; i < x.length; i++) x[i] = images.data[s * h * w + i] / 255;
    const out = await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', x, [m, 1, h, w]) });
    const y = out[session.outputNames[0]];
    const k = y.dims[1];
    for (let i = 0; i < m; i++) {
      let best = 0;
      for (let j = 1; j < k; j++) if (y.data[i * k + j] > y.data[i * k + best]) best = j;
      if (best === labels.data[s + i]) correct++;
    }
  }
  console.log(`ONNX Runtime test accuracy ${(100 * correct / n).toFixed(2)} % (${correct} of ${n})`);
}

main().catch((e) => { console.error(e.message || e); process.exit(1); });
