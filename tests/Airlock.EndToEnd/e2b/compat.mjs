// The real e2b SDK, unmodified, against airlockd: everything docs/e2b-compat.md lists, run by whichever SDK version
// COMPAT_SDK names ("e2b" = 2.51.0, "e2b-2.45" = 2.45.0; see package.json). Pointed at airlockd through the SDK's own
// environment only (E2B_API_URL, E2B_SANDBOX_URL, E2B_DOMAIN, E2B_API_KEY).
//
// What the boundary can do comes from the environment ("1" = yes):
//   COMPAT_PAUSE                  pause() and Sandbox.connect() work
//   COMPAT_PAUSE_KEEPS_PROCESSES  a default pause keeps processes (memory snapshot)
//   COMPAT_PAUSE_NO_MEMORY        pause({ keepMemory: false }) works (files kept, processes gone)
//   COMPAT_AUTOPAUSE              lifecycle { onTimeout: 'pause' } works
//   COMPAT_ROOT                   commands may run as root (not in the process boundary)
// Skipped steps say why in "skipped". Every wait is bounded. The last stdout line is one JSON object:
// { ok: true, ...what it saw } or { ok: false, step, error, ...what it saw so far }; the exit code is 0 only for ok.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'

const pkg = process.env.COMPAT_SDK || 'e2b'
const { Sandbox, CommandExitError } = await import(pkg)
const flag = (name) => process.env[name] === '1'
const can = {
  pause: flag('COMPAT_PAUSE'),
  pauseKeepsProcesses: flag('COMPAT_PAUSE_KEEPS_PROCESSES'),
  pauseNoMemory: flag('COMPAT_PAUSE_NO_MEMORY'),
  autoPause: flag('COMPAT_AUTOPAUSE'),
}
const run = `r${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`
const seen = {
  sdk: pkg,
  sdkVersion: JSON.parse(readFileSync(new URL(`./node_modules/${pkg}/package.json`, import.meta.url), 'utf8')).version,
  run,
  can,
  skipped: {},
}
let step = 'start'
const created = []

const deadlineMs = Number(process.env.COMPAT_DEADLINE_MS || 300_000)
const deadline = setTimeout(() => finish(new Error(`overall deadline of ${deadlineMs} ms hit`)), deadlineMs)

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** Polls until check() returns something truthy; bounded. */
async function waitFor(what, check, { timeoutMs = 10_000, intervalMs = 200 } = {}) {
  const start = Date.now()
  let last
  for (;;) {
    try {
      const value = await check()
      if (value) return value
    } catch (e) {
      last = e
    }
    if (Date.now() - start > timeoutMs) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`)
    }
    await sleep(intervalMs)
  }
}

/** Resolves with the promise's outcome or rejects when it takes longer than timeoutMs. */
function within(what, promise, timeoutMs = 10_000) {
  let timer
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs) }),
  ])
}

/** wait() of a killed command: E2B reports a signal death as CommandExitError; either way it must end. */
const ended = (handle, what) => within(what, handle.wait().then((r) => r.exitCode, (e) => (e instanceof CommandExitError ? e.exitCode : Promise.reject(e))))

function skip(name, reason) {
  seen.skipped[name] = reason
  console.error(`compat: skipping ${name}: ${reason}`)
}

let finished = false
async function finish(error) {
  if (finished) return
  finished = true
  clearTimeout(deadline)
  await Promise.allSettled(created.map((id) => Sandbox.kill(id)))
  if (error) {
    console.error(error)
    console.log(JSON.stringify({ ok: false, step, error: `${error.constructor?.name}: ${error.message}`, ...seen }))
    process.exit(1)
  }
  console.log(JSON.stringify({ ok: true, ...seen }))
  process.exit(0)
}

try {
  // --- create: metadata (one key and value with characters the SDK encodes), envs, timeout -------------------------
  step = 'create'
  const createdAt = Date.now()
  let sbx = await Sandbox.create('base', {
    timeoutMs: 180_000,
    metadata: { compatRun: run, role: 'a', 'compat key': 'v&1 /=' },
    envs: { COMPAT_ENV: 'from-create' },
  })
  created.push(sbx.sandboxId)
  seen.sandboxId = sbx.sandboxId

  // Metrics are collected in the background; poll from the start and look at the result later.
  const metrics = waitFor('a metrics entry', async () => {
    const entries = await sbx.getMetrics()
    return entries.length > 0 ? { entries, afterMs: Date.now() - createdAt } : null
  }, { timeoutMs: 20_000, intervalMs: 1_000 }).then((value) => ({ value }), (error) => ({ error }))

  // --- a second sandbox with the same run id: for the paginated list, and (when the boundary can) the auto-pause ---
  step = 'create second sandbox'
  const second = await Sandbox.create('base', {
    timeoutMs: can.autoPause ? 15_000 : 180_000,
    metadata: { compatRun: run, role: 'b' },
    ...(can.autoPause ? { lifecycle: { onTimeout: 'pause' } } : {}),
  })
  created.push(second.sandboxId)
  const secondCreatedAt = Date.now()
  await second.files.write('/home/user/b.txt', 'kept across auto-pause\n')
  if (!can.autoPause) skip('autoPause', 'COMPAT_AUTOPAUSE is not 1: this boundary cannot pause on timeout')

  // --- Sandbox.list: metadata filter, state filter, pagination by X-Next-Token ---------------------------------------
  step = 'list'
  const paginator = Sandbox.list({ query: { metadata: { compatRun: run }, state: ['running', 'paused'] }, limit: 1 })
  const pages = []
  while (paginator.hasNext && pages.length < 5) {
    pages.push((await paginator.nextItems()).map((s) => s.sandboxId))
  }
  seen.listPages = pages
  assert.deepEqual(pages.flat().sort(), [sbx.sandboxId, second.sandboxId].sort(), 'both sandboxes of this run, each once')
  assert.ok(pages.length >= 2, `limit 1 must paginate (x-next-token); got pages ${JSON.stringify(pages)}`)
  const bySpecial = await Sandbox.list({ query: { metadata: { 'compat key': 'v&1 /=' } } }).nextItems()
  seen.listBySpecialMetadata = bySpecial.map((s) => s.sandboxId)
  assert.deepEqual(seen.listBySpecialMetadata, [sbx.sandboxId], 'metadata filter with characters the SDK URL-encodes')
  assert.deepEqual(await Sandbox.list({ query: { metadata: { compatRun: `${run}-none` } } }).nextItems(), [])

  // --- commands: streamed output, exit codes, envs, users ------------------------------------------------------------
  step = 'commands.run'
  const chunks = []
  const out = await sbx.commands.run('echo hello-from-airlock; for i in 1 2 3; do echo line$i; sleep 0.1; done; echo oops >&2', {
    onStdout: (data) => chunks.push(data),
  })
  assert.equal(out.exitCode, 0)
  assert.match(out.stdout, /hello-from-airlock\nline1\nline2\nline3/)
  assert.equal(out.stderr.trim(), 'oops')
  assert.ok(chunks.length >= 1, 'stdout was streamed through onStdout')
  seen.streamedChunks = chunks.length
  await assert.rejects(sbx.commands.run('exit 3'), (e) => e instanceof CommandExitError && e.exitCode === 3)
  assert.equal((await sbx.commands.run('echo "$COMPAT_ENV"')).stdout, 'from-create\n', 'envs given at create reach commands')
  assert.equal((await sbx.commands.run('id -un')).stdout, 'user\n', 'no user named: the default user')
  if (flag('COMPAT_ROOT')) {
    assert.equal((await sbx.commands.run('id -un', { user: 'root' })).stdout, 'root\n', 'user: root')
  } else {
    // The process boundary maps only the sandbox user into its user namespace: root is refused, clearly.
    await assert.rejects(sbx.commands.run('id -un', { user: 'root' }), (e) => /root/.test(String(e)))
    skip('root', 'COMPAT_ROOT is not 1: this boundary has no root')
  }

  step = 'commands background + kill'
  const sleeper = await sbx.commands.run('sleep 600', { background: true, timeoutMs: 0 })
  assert.ok(sleeper.pid > 0)
  assert.equal(await sleeper.kill(), true)
  seen.killedExitCode = await ended(sleeper, 'the killed background command to end')

  step = 'commands.connect after the handle is dropped'
  const ticker = await sbx.commands.run('for i in $(seq 1 600); do echo tick$i; sleep 0.1; done', { background: true, timeoutMs: 0 })
  const pid = ticker.pid
  await ticker.disconnect()
  const listed = await sbx.commands.list()
  seen.listedProcesses = listed.length
  const mine = listed.find((p) => p.pid === pid)
  assert.ok(mine, `commands.list() shows pid ${pid}; got ${JSON.stringify(listed.map((p) => p.pid))}`)
  assert.equal(mine.cmd, '/bin/bash')
  assert.ok(mine.args.some((a) => a.includes('tick')), `args of pid ${pid}: ${JSON.stringify(mine.args)}`)
  const ticks = []
  const reattached = await sbx.commands.connect(pid, { onStdout: (data) => ticks.push(data), timeoutMs: 0 })
  await waitFor('output of the re-attached command', () => ticks.join('').match(/tick\d+/))
  seen.reattached = true
  assert.equal(await sbx.commands.kill(pid), true)
  await ended(reattached, 'the re-attached command to end after kill')

  // --- PTY: size, resize, kill ---------------------------------------------------------------------------------------
  step = 'pty'
  const decoder = new TextDecoder()
  let screen = ''
  const term = await sbx.pty.create({ cols: 80, rows: 24, onData: (data) => { screen += decoder.decode(data, { stream: true }) }, timeoutMs: 0 })
  const size = async (n) => {
    await sbx.pty.sendInput(term.pid, new TextEncoder().encode("stty size | sed 's/^/SIZE=/'\n"))
    return (await waitFor(`stty size output #${n}`, () => {
      const all = [...screen.matchAll(/SIZE=(\d+) (\d+)/g)]
      return all.length >= n ? all[n - 1] : null
    }))[0]
  }
  seen.ptySize = await size(1)
  assert.equal(seen.ptySize, 'SIZE=24 80')
  step = 'pty.resize'
  await sbx.pty.resize(term.pid, { cols: 100, rows: 30 })
  seen.ptyResized = await size(2)
  assert.equal(seen.ptyResized, 'SIZE=30 100')
  assert.equal(await sbx.pty.kill(term.pid), true)
  await ended(term, 'the killed pty to end')

  // --- files ---------------------------------------------------------------------------------------------------------
  step = 'files'
  await sbx.files.write('/home/user/notes/hello.txt', 'written by the e2b SDK\n')
  assert.equal(await sbx.files.read('/home/user/notes/hello.txt'), 'written by the e2b SDK\n')
  const entries = await sbx.files.list('/home/user/notes')
  seen.listed = entries.map((e) => `${e.name}:${e.type}`)
  assert.deepEqual(entries.map((e) => e.name), ['hello.txt'])
  assert.equal(await sbx.files.exists('/home/user/notes/hello.txt'), true)
  assert.equal(await sbx.files.exists('/home/user/notes/missing.txt'), false)
  assert.equal(await sbx.files.makeDir('/home/user/notes/sub'), true)
  await sbx.files.rename('/home/user/notes/sub', '/home/user/notes/sub2')
  await sbx.files.remove('/home/user/notes/sub2')
  assert.equal(await sbx.files.exists('/home/user/notes/sub2'), false)

  step = 'files.watchDir'
  await sbx.files.makeDir('/home/user/watched')
  const events = []
  const watcher = await sbx.files.watchDir('/home/user/watched', (e) => events.push(e), { timeoutMs: 0 })
  await sbx.files.write('/home/user/watched/seen.txt', 'watch me\n')
  const event = await waitFor('a watchDir event for seen.txt', () => events.find((e) => e.name.endsWith('seen.txt')))
  seen.watchEvent = `${event.type}:${event.name}`
  await watcher.stop()

  // --- getInfo, getMetrics, setTimeout -------------------------------------------------------------------------------
  step = 'getInfo'
  const info = await sbx.getInfo()
  seen.info = { state: info.state, templateId: info.templateId, metadata: info.metadata, lifecycle: info.lifecycle ?? null }
  assert.equal(info.sandboxId, sbx.sandboxId)
  assert.equal(info.state, 'running')
  assert.deepEqual(info.metadata, { compatRun: run, role: 'a', 'compat key': 'v&1 /=' })
  assert.ok(!Number.isNaN(info.endAt.getTime()) && !Number.isNaN(info.startedAt.getTime()), 'startedAt and endAt are dates')

  step = 'getMetrics'
  const polled = await metrics
  if (polled.error) throw polled.error
  seen.metrics = { count: polled.value.entries.length, afterMs: polled.value.afterMs }
  const metric = polled.value.entries[0]
  for (const field of ['cpuUsedPct', 'cpuCount', 'memUsed', 'memTotal', 'diskUsed', 'diskTotal']) {
    assert.equal(typeof metric[field], 'number', `metrics entry field ${field}`)
  }
  assert.ok(!Number.isNaN(metric.timestamp.getTime()), 'metrics timestamp is a date')

  step = 'setTimeout'
  await sbx.setTimeout(240_000)
  const extended = await sbx.getInfo()
  seen.timeoutExtendedByMs = extended.endAt.getTime() - info.endAt.getTime()
  assert.ok(seen.timeoutExtendedByMs > 30_000, `endAt moved from ${info.endAt.toISOString()} to ${extended.endAt.toISOString()}`)

  // --- signed URLs: upload and download without the access token -----------------------------------------------------
  step = 'uploadUrl/downloadUrl'
  const filePath = '/home/user/notes/uploaded.txt'
  const uploadUrl = await sbx.uploadUrl(filePath)
  const downloadUrl = await sbx.downloadUrl(filePath)
  assert.match(uploadUrl, /[?&]signature=v1_/)
  // With E2B_SANDBOX_URL the URL names no sandbox (docs/e2b-compat.md, finding 9): route it with E2B's headers.
  const routing = { 'E2b-Sandbox-Id': sbx.sandboxId, 'E2b-Sandbox-Port': '49983' }
  const form = new FormData()
  form.append('file', new Blob(['uploaded through a signed URL\n']), filePath)
  const uploaded = await fetch(uploadUrl, { method: 'POST', body: form, headers: routing })
  seen.uploadStatus = uploaded.status
  assert.ok(uploaded.ok, `POST to the signed upload URL: ${uploaded.status} ${await uploaded.text()}`)
  const downloaded = await fetch(downloadUrl, { headers: routing })
  seen.downloadStatus = downloaded.status
  assert.equal(await downloaded.text(), 'uploaded through a signed URL\n')
  const tampered = await fetch(downloadUrl.replace(/signature=v1_[^&]{4}/, 'signature=v1_AAAA'), { headers: routing })
  seen.tamperedSignatureStatus = tampered.status
  assert.ok(tampered.status === 401 || tampered.status === 403, `a wrong signature must be refused, got ${tampered.status}`)
  const wrongOperation = await fetch(uploadUrl, { headers: routing })
  seen.uploadUrlUsedForReadStatus = wrongOperation.status
  assert.ok(!wrongOperation.ok, `an upload (write) signature must not allow a read, got ${wrongOperation.status}`)
  // The plain URL, as the SDK hands it out: airlockd routes it by the token that signed it.
  const plain = await fetch(downloadUrl)
  seen.signedUrlPlainStatus = plain.status
  assert.equal(await plain.text(), 'uploaded through a signed URL\n', 'the plain signed URL reaches the sandbox that signed it')
  assert.equal(await sbx.isRunning(), true)

  // --- pause, connect (memory kept, then not) ------------------------------------------------------------------------
  if (!can.pause) {
    skip('pause', 'COMPAT_PAUSE is not 1: this boundary cannot pause')
  } else {
    step = 'pause'
    await sbx.commands.run('sleep 100000', { background: true, timeoutMs: 0 })
    assert.equal(await sbx.pause(), true)
    assert.equal(await sbx.pause(), false, 'pausing a paused sandbox answers 409, which the SDK reports as false')
    assert.equal((await Sandbox.getInfo(sbx.sandboxId)).state, 'paused')
    assert.equal(await sbx.isRunning(), false, 'a paused sandbox is not running (envd answers 502)')
    step = 'connect after pause'
    sbx = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 180_000 })
    const after = await sbx.commands.run('cat /home/user/notes/hello.txt; pgrep -x sleep >/dev/null && echo sleeping || echo gone')
    seen.afterPause = after.stdout.trim().split('\n').at(-1)
    assert.equal(after.stdout, `written by the e2b SDK\n${can.pauseKeepsProcesses ? 'sleeping' : 'gone'}\n`)
    assert.equal((await sbx.getInfo()).state, 'running')
    seen.resumed = true

    if (!can.pauseNoMemory) {
      skip('pauseNoMemory', 'COMPAT_PAUSE_NO_MEMORY is not 1')
    } else {
      step = 'pause { keepMemory: false }'
      await sbx.commands.run('sleep 100000', { background: true, timeoutMs: 0 })
      assert.equal(await sbx.pause({ keepMemory: false }), true)
      step = 'connect after pause without memory'
      sbx = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 180_000 })
      const cold = await sbx.commands.run('cat /home/user/notes/hello.txt; pgrep -x sleep >/dev/null && echo sleeping || echo gone')
      assert.equal(cold.stdout, 'written by the e2b SDK\ngone\n', 'files kept, processes gone')
      seen.resumedWithoutMemory = true
    }
  }

  // --- lifecycle { onTimeout: 'pause' } ------------------------------------------------------------------------------
  if (can.autoPause) {
    step = 'auto-pause on timeout'
    const paused = await waitFor('the second sandbox to be paused by its timeout', async () => {
      const state = (await Sandbox.getInfo(second.sandboxId)).state
      return state === 'paused' ? state : null
    }, { timeoutMs: 90_000, intervalMs: 1_000 })
    seen.autoPaused = { state: paused, afterMs: Date.now() - secondCreatedAt }
    const back = await Sandbox.connect(second.sandboxId, { timeoutMs: 60_000 })
    assert.equal(await back.files.read('/home/user/b.txt'), 'kept across auto-pause\n')
    seen.autoPaused.lifecycle = (await back.getInfo()).lifecycle ?? null
    assert.equal(await back.kill(), true)
  } else {
    assert.equal(await second.kill(), true)
  }

  // --- kill, isRunning -----------------------------------------------------------------------------------------------
  step = 'kill'
  assert.equal(await sbx.kill(), true)
  seen.killed = true
  assert.equal(await sbx.isRunning(), false, 'isRunning() after kill: envd must answer 502')
  seen.isRunningAfterKill = false
  assert.equal(await Sandbox.kill(sbx.sandboxId), false, 'killing a killed sandbox answers 404, which the SDK reports as false')
  step = 'done'
  await finish()
} catch (e) {
  await finish(e)
}
