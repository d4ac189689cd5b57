// What the e2b SDK (COMPAT_SDK picks the version) makes of envd answers for a sandbox airlockd does not run:
// the gateway must answer as E2B's edge does (502), so isRunning() is false and calls fail as "not running".
// Needs no boundary: the sandbox id is made up. Prints one JSON line.
import assert from 'node:assert/strict'

const { Sandbox, SandboxNotFoundError, TimeoutError } = await import(process.env.COMPAT_SDK || 'e2b')
const deadline = setTimeout(() => { console.error('not-running: deadline hit'); process.exit(2) }, 60_000)

// The SDK's own constructor, as Sandbox.connect() would call it with what the API returned.
const sbx = new Sandbox({ sandboxId: 'a0000000000000000000', envdVersion: '0.5.7', envdAccessToken: 'not-a-token' })
const seen = { isRunning: await sbx.isRunning() }
assert.equal(seen.isRunning, false, 'isRunning() of a sandbox airlockd does not run')

const failure = async (call) => call().then(() => 'succeeded', (e) => e.constructor.name)
seen.commandsRun = await failure(() => sbx.commands.run('true'))
seen.filesRead = await failure(() => sbx.files.read('/etc/hostname'))
seen.filesList = await failure(() => sbx.files.list('/'))
assert.equal(seen.commandsRun, SandboxNotFoundError.name)
assert.equal(seen.filesRead, TimeoutError.name)
assert.equal(seen.filesList, TimeoutError.name)

const raw = await fetch(`${process.env.E2B_SANDBOX_URL}/health`, { headers: { 'E2b-Sandbox-Id': sbx.sandboxId, 'E2b-Sandbox-Port': '49983' } })
seen.status = raw.status
seen.body = await raw.json()
assert.deepEqual(seen.body, { sandboxId: sbx.sandboxId, message: 'The sandbox was not found', code: 502 })
clearTimeout(deadline)
console.log(JSON.stringify({ ok: true, ...seen }))
