// greedy.mjs runs llama.cpp (through node-llama-cpp) on a GGUF file: it
// evaluates a prompt, generates tokens greedily and prints one JSON object
// with the token ids, the text, and prompt and decode speed.
//
// usage: node greedy.mjs --model FILE [--prompt TEXT | --ids 1,2,3] [--n 32]
//                        [--threads 2] [--ctx 2048] [--kv f16|q8_0|q4_0] [--flash]
import {getLlama} from "node-llama-cpp";
import {parseArgs} from "node:util";

const {values: a} = parseArgs({options: {
  model: {type: "string"}, prompt: {type: "string", default: ""}, ids: {type: "string", default: ""},
  n: {type: "string", default: "32"}, threads: {type: "string", default: "2"},
  ctx: {type: "string", default: "2048"}, kv: {type: "string", default: "f16"},
  flash: {type: "boolean", default: false},
}});
if (!a.model) { console.error("greedy.mjs: --model is required"); process.exit(2); }

const llama = await getLlama({gpu: false, build: "never", logLevel: "error"});
const model = await llama.loadModel({modelPath: a.model});
const kvType = a.kv.toUpperCase();
const context = await model.createContext({
  contextSize: Number(a.ctx), threads: Number(a.threads), batchSize: 512, flashAttention: a.flash,
  experimentalKvCacheKeyType: kvType, experimentalKvCacheValueType: kvType,
});
const seq = context.getSequence();
const prompt = a.ids ? a.ids.split(",").map(Number) : model.tokenize(a.prompt, true);

// All prompt tokens but the last are evaluated on their own (prefill
// speed); generation starts by evaluating the last one.
let t0 = performance.now();
if (prompt.length > 1) await seq.evaluateWithoutGeneratingNewTokens(prompt.slice(0, -1));
const promptMs = performance.now() - t0;

const out = [];
const n = Number(a.n);
t0 = performance.now();
let firstMs = 0;
// tokenMs[i] is the time of decode step i (evaluating one token and
// sampling the next): medians of it resist a busy machine better than
// the mean that decode_tps is.
const tokenMs = [];
let last = t0;
for await (const tok of seq.evaluate(prompt.slice(-1), {temperature: 0})) {
  const now = performance.now();
  if (out.length === 0) firstMs = now - t0;
  tokenMs.push(now - last);
  last = now;
  out.push(tok);
  if (out.length >= n) break;
}
// Decode speed excludes the first token, which paid for the last prompt
// token's evaluation.
const decodeMs = performance.now() - t0 - firstMs;
console.log(JSON.stringify({
  prompt_tokens: prompt.length, prompt_ids: prompt, tokens: out, text: model.detokenize(out),
  prompt_ms: promptMs, decode_ms: decodeMs,
  prompt_tps: (prompt.length - 1) / (promptMs / 1000), decode_tps: (out.length - 1) / (decodeMs / 1000),
  threads: Number(a.threads), kv: a.kv, flash: a.flash, token_ms: tokenMs,
}));
await context.dispose(); await model.dispose();
