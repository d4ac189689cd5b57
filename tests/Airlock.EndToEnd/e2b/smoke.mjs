// The real e2b SDK, unmodified, pointed at airlockd through its environment only
// (E2B_API_URL, E2B_SANDBOX_URL, E2B_DOMAIN, E2B_API_KEY). Prints one JSON line with what it saw.
import assert from 'node:assert/strict'
// COMPAT_SDK picks the SDK version: "e2b" (2.51.0) or "e2b-2.45" (2.45.0), see package.json.
const { Sandbox, CommandExitError } = await import(process.env.COMPAT_SDK || 'e2b')

const deadline = setTimeout(() => { console.error('smoke: overall deadline hit'); process.exit(2) }, 120_000)

const sbx = await Sandbox.create('base', { timeoutMs: 120_000 })
const seen = { sandboxId: sbx.sandboxId }
try {
  const chunks = []
  const run = await sbx.commands.run('echo hello-from-airlock; for i in 1 2 3; do echo line$i; sleep 0.1; done; echo oops >&2', {
    onStdout: (data) => chunks.push(data),
  })
  assert.equal(run.exitCode, 0)
  assert.match(run.stdout, /hello-from-airlock\nline1\nline2\nline3/)
  assert.equal(run.stderr.trim(), 'oops')
  assert.ok(chunks.length >= 1, 'stdout was streamed through onStdout')
  seen.streamedChunks = chunks.length

  try {
    await sbx.commands.run('exit 3')
    assert.fail('a non-zero exit must throw CommandExitError')
  } catch (e) {
    assert.ok(e instanceof CommandExitError, `expected CommandExitError, got ${e}`)
    assert.equal(e.exitCode, 3)
  }

  await sbx.files.write('/home/user/notes/hello.txt', 'written by the e2b SDK\n')
  const text = await sbx.files.read('/home/user/notes/hello.txt')
  assert.equal(text, 'written by the e2b SDK\n')
  const entries = await sbx.files.list('/home/user/notes')
  assert.deepEqual(entries.map((e) => e.name), ['hello.txt'])
  seen.listed = entries.map((e) => `${e.name}:${e.type}`)

  const cat = await sbx.commands.run('cat /home/user/notes/hello.txt; id -un')
  assert.equal(cat.stdout, 'written by the e2b SDK\nuser\n')
  assert.equal(await sbx.isRunning(), true)

  if (process.env.SMOKE_PAUSE === '1') {
    // Pause to disk and come back through the SDK's own calls; the file and a background process survive.
    await sbx.commands.run('sleep 100000', { background: true })
    assert.equal(await sbx.pause(), true)
    assert.equal(await sbx.pause(), false, 'pausing a paused sandbox answers 409, which the SDK reports as false')
    const again = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 120_000 })
    const after = await again.commands.run('cat /home/user/notes/hello.txt; pgrep -x sleep >/dev/null && echo sleeping')
    assert.equal(after.stdout, 'written by the e2b SDK\nsleeping\n')
    seen.resumed = true
  }
} finally {
  await sbx.kill()
}
seen.killed = true
clearTimeout(deadline)
console.log(JSON.stringify({ ok: true, ...seen }))
