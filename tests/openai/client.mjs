// The official openai client against a running turbomem serve: streams a
// chat completion and a text completion and lists the models, checking
// the shapes the client parses. Usage: node client.mjs BASE_URL [API_KEY]
// (BASE_URL like http://127.0.0.1:8080/v1). Prints one line per check and
// "N passed, N failed"; exits non-zero on any failure.
import OpenAI from "openai";

const [baseURL, apiKey = "none"] = process.argv.slice(2);
if (!baseURL) {
  console.error("usage: node client.mjs BASE_URL [API_KEY]");
  process.exit(2);
}
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60_000 });
let passed = 0, failed = 0;

async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok   ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e?.stack ?? e}`);
  }
}

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

let modelID = "";
await check("models.list", async () => {
  const page = await client.models.list();
  const models = page.data;
  assert(models.length === 1 && models[0].object === "model" && models[0].id, `models: ${JSON.stringify(models)}`);
  modelID = models[0].id;
});

await check("chat.completions.create stream with usage", async () => {
  const stream = await client.chat.completions.create({
    model: modelID,
    messages: [{ role: "system", content: "Be brief." }, { role: "user", content: "Say something about libraries." }],
    max_tokens: 12,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = "", finish = null, usage = null, role = null, chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    assert(chunk.object === "chat.completion.chunk", `object ${chunk.object}`);
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      if (c.delta.role) role = c.delta.role;
      text += c.delta.content ?? "";
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert(role === "assistant", `role ${role}`);
  assert(finish === "stop" || finish === "length", `finish ${finish}`);
  assert(usage && usage.completion_tokens >= 1 && usage.total_tokens === usage.prompt_tokens + usage.completion_tokens, `usage ${JSON.stringify(usage)}`);
  assert(text.length > 0 && chunks >= 3, `text ${JSON.stringify(text)} in ${chunks} chunks`);
});

await check("completions.create stream", async () => {
  const stream = await client.completions.create({
    model: modelID, prompt: "The history of the city begins", max_tokens: 10, temperature: 0, stream: true,
  });
  let text = "", finish = null;
  for await (const chunk of stream) {
    assert(chunk.object === "text_completion", `object ${chunk.object}`);
    for (const c of chunk.choices) {
      text += c.text;
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert(text.length > 0 && finish, `text ${JSON.stringify(text)}, finish ${finish}`);
  // The same request whole: greedy decoding gives the same text.
  const whole = await client.completions.create({ model: modelID, prompt: "The history of the city begins", max_tokens: 10, temperature: 0 });
  assert(whole.choices[0].text === text, `whole ${JSON.stringify(whole.choices[0].text)} vs streamed ${JSON.stringify(text)}`);
});

await check("errors reach the client as APIError", async () => {
  try {
    await client.chat.completions.create({ model: modelID, messages: [{ role: "user", content: "x" }], n: 2 });
  } catch (e) {
    assert(e instanceof OpenAI.APIError && e.status === 400 && e.param === "n", `error ${e}`);
    return;
  }
  throw new Error("n=2 was accepted");
});

console.log(`${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
