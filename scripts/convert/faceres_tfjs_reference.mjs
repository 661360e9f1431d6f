// Reference descriptors from TF.js itself, to check our PyTorch executor of the faceres graph against.
//
// Runs faceres.json (+ .bin) with @tensorflow/tfjs (pure JS, CPU backend) on raw 224x224x3 uint8 RGB chips,
// with the preprocessing of FaceResIdentity (BGR minus the VGGFace2 means), and prints the 1024-D
// `global_pooling/Mean` of each chip as JSON. scripts/convert/make_faceres_fixture.py writes the chips and calls it:
//
//   mkdir /tmp/tfjs && (cd /tmp/tfjs && npm install @tensorflow/tfjs@4.22.0)
//   NODE_PATH=/tmp/tfjs/node_modules node scripts/convert/faceres_tfjs_reference.mjs MODEL_DIR CHIP.rgb ... > out.json
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const require = createRequire(process.env.NODE_PATH ? join(process.env.NODE_PATH, 'x.js') : import.meta.url);
const tf = require('@tensorflow/tfjs');

const SIZE = 224;
const BGR_MEAN = [103.939, 116.779, 123.68];

async function main() {
  const [modelDir, ...chips] = process.argv.slice(2);
  await tf.setBackend('cpu');
  const spec = JSON.parse(readFileSync(join(modelDir, 'faceres.json'), 'utf8'));
  const weightData = readFileSync(join(modelDir, spec.weightsManifest[0].paths[0]));
  const model = await tf.loadGraphModel(tf.io.fromMemory({
    modelTopology: spec.modelTopology,
    weightSpecs: spec.weightsManifest.flatMap((group) => group.weights),
    weightData: weightData.buffer.slice(weightData.byteOffset, weightData.byteOffset + weightData.byteLength),
  }));
  const descriptors = [];
  for (const path of chips) {
    const rgb = readFileSync(path);
    const input = new Float32Array(SIZE * SIZE * 3);
    for (let pixel = 0; pixel < SIZE * SIZE; pixel += 1) {
      for (let channel = 0; channel < 3; channel += 1) { // BGR: channel c of the input is RGB channel 2 - c
        input[pixel * 3 + channel] = rgb[pixel * 3 + (2 - channel)] - BGR_MEAN[channel];
      }
    }
    const output = model.execute(tf.tensor4d(input, [1, SIZE, SIZE, 3]), 'global_pooling/Mean');
    descriptors.push(Array.from(await output.data()));
  }
  process.stdout.write(JSON.stringify({ tfjs_version: tf.version.tfjs, descriptors }));
}

main();
