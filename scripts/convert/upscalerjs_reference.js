// Runs an UpscalerJS layers model with TensorFlow.js itself (pure JavaScript, CPU backend), so that the
// PyTorch port can be checked against the original. Called by make_upscalerjs_fixture.py:
//   node upscalerjs_reference.js MODEL_DIR INPUT.u8 HEIGHT WIDTH OUTPUT.f32
// INPUT.u8: HxWx3 uint8 RGB, row-major; OUTPUT.f32: the model's raw output, (sH)x(sW)x3 float32 little-endian.
const fs = require("fs");
const path = require("path");
const tf = require("@tensorflow/tfjs");

async function main() {
  const [modelDir, inputPath, height, width, outputPath] = process.argv.slice(2);
  const model = JSON.parse(fs.readFileSync(path.join(modelDir, "model.json")));
  const manifest = model.weightsManifest[0];
  const shards = manifest.paths.map((name) => fs.readFileSync(path.join(modelDir, name)));
  const weightData = new Uint8Array(Buffer.concat(shards)).buffer;
  await tf.setBackend("cpu");
  const layers = await tf.loadLayersModel(tf.io.fromMemory({
    modelTopology: model.modelTopology, weightSpecs: manifest.weights, weightData,
  }));
  const pixels = new Uint8Array(fs.readFileSync(inputPath));
  // UpscalerJS feeds RDN models pixel values in 0..255 as float32 (inputRange [0, 255])
  const input = tf.tensor4d(Float32Array.from(pixels), [1, Number(height), Number(width), 3]);
  const output = layers.predict(input);
  fs.writeFileSync(outputPath, Buffer.from((await output.data()).buffer));
}

main().catch((err) => { console.error(err); process.exit(1); });
