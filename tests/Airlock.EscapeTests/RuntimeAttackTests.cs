using Airlock.Envd.Client;

namespace Airlock.EscapeTests;

/// <summary>
/// Attacks on the runtime that builds the sandbox and on the kernel interfaces around it, each a re-enactment of a
/// published container-escape class. Every probe prints <see cref="End"/> last, so a script that breaks early fails
/// the test instead of passing for want of output.
/// </summary>
public sealed partial class EscapeAttemptTests
{
    private const string End = "probe-ran-to-the-end";

    private static int Count(string output, string word) => output.Split(word).Length - 1;

    /// <summary>Host binaries an escape would overwrite: the runtimes, and the executable of every host process of the sandbox.</summary>
    private IReadOnlyList<string> RuntimeBinaries(string boundary)
    {
        var paths = new List<string> { "/usr/bin/bwrap", "/usr/bin/qemu-system-x86_64", "/usr/bin/setpriv", "/usr/bin/nsenter", "/usr/sbin/runc", "/usr/bin/runc", "/usr/bin/crun" };
        foreach (var pid in EscapeFixture.HostProcessesOf(fixture.Sandboxes[boundary].SandboxId))
        {
            try
            {
                if (new FileInfo($"/proc/{pid}/exe").LinkTarget is { } target && !target.EndsWith(" (deleted)", StringComparison.Ordinal))
                {
                    paths.Add(target);
                }
            }
            catch (IOException)
            {
            }
        }

        return paths;
    }

    [Theory(Timeout = 120_000)]
    [MemberData(nameof(Boundaries))]
    public async Task The_runtime_binary_cannot_be_overwritten_through_proc_exe(string boundary)
    {
        // runc CVE-2019-5736: a process inside opens the runtime's own binary through /proc/<pid>/exe (directly, or as
        // an O_PATH handle reopened for writing through /proc/self/fd once the runtime lets go) and rewrites it on the
        // host. Opening for write is the whole attack; nothing is written or truncated even if it opens.
        var binaries = RuntimeBinaries(boundary);
        Assert.True(binaries.Count > 7, "found no host process of the sandbox whose binary to guard");
        var before = EscapeFixture.Hashes(binaries);
        var output = await Attack(boundary, $$"""
            python3 - <<'PY'
            import glob, os, time
            links = sorted(set(["/proc/self/exe"] + glob.glob("/proc/[0-9]*/exe")), key=lambda l: (len(l), l))
            errnos = {}
            for link in links:
                for mode, flags in (("wronly", os.O_WRONLY), ("rdwr", os.O_RDWR), ("append", os.O_WRONLY | os.O_APPEND)):
                    try:
                        fd = os.open(link, flags)
                    except OSError as e:
                        errnos[e.errno] = errnos.get(e.errno, 0) + 1
                        if link in ("/proc/self/exe", "/proc/1/exe"):
                            print("refused", link, mode, e.errno)
                    else:
                        print("OPENED", link, mode); os.close(fd)
            print("refused opens by errno", errnos)
            held = 0
            deadline = time.time() + 20
            for link in links:
                try:
                    handle = os.open(link, os.O_PATH)
                except OSError:
                    continue  # kernel threads and other users' processes: not even a handle
                held += 1
                opened, err, until = False, 0, min(deadline, time.time() + 0.5)
                while not opened and time.time() < until:
                    try:
                        os.close(os.open(f"/proc/self/fd/{handle}", os.O_WRONLY)); opened = True
                    except OSError as e:
                        err = e.errno
                print(("OPENED" if opened else "refused"), link, "reopened-o_path", err)
                os.close(handle)
            print("links", len(links), "handles", held)
            PY
            [ $? -eq 0 ] && echo {{End}}
            """);
        Assert.Contains(End, output, StringComparison.Ordinal);
        Assert.DoesNotContain("OPENED", output, StringComparison.Ordinal);
        Assert.Contains("refused /proc/self/exe wronly", output, StringComparison.Ordinal);
        Assert.Contains("refused /proc/1/exe wronly", output, StringComparison.Ordinal); // pid 1: bwrap itself, or the guest's init
        Assert.True(Count(output, "reopened-o_path") >= 1, output);
        Assert.Equal(before, EscapeFixture.Hashes(binaries));
    }

    [Theory(Timeout = 120_000)]
    [MemberData(nameof(Boundaries))]
    public async Task Leaked_descriptors_and_working_directories_lead_nowhere_outside(string boundary)
    {
        // runc CVE-2024-21626: a descriptor or working directory of the host left open in the sandbox is a way out —
        // /proc/self/fd/N/../../.. or openat(N, "../../..") walks the host's tree. Every fd, cwd and root visible inside
        // is tried, from the shell, from Python, and as the working directory of a process started through the API.
        var secretRelative = Path.Combine(fixture.SecretDir, "secret.txt").TrimStart('/');
        var secretDirName = Path.GetFileName(fixture.SecretDir);
        var output = await Attack(boundary, $$"""
            python3 - <<'PY'
            import glob, os
            secret = "{{secretRelative}}"
            links = sorted(set(glob.glob("/proc/[0-9]*/fd/*") + glob.glob("/proc/self/fd/*") + glob.glob("/proc/[0-9]*/cwd") + glob.glob("/proc/[0-9]*/root") + ["/proc/self/cwd", "/proc/self/root"]))
            tried, listings = 0, set()
            def read(path, **kw):
                global tried
                tried += 1
                try:
                    fd = os.open(path, os.O_RDONLY, **kw)
                    try:
                        print("READ", path, os.read(fd, 200))
                    finally:
                        os.close(fd)
                except OSError:
                    pass  # the errno names the path, which the test must not see echoed back
            for link in links:
                for up in range(8):
                    read(link + "/.." * up + "/" + secret)
                try:
                    listings.add(" ".join(sorted(os.listdir(link + "/../../.."))))
                except OSError:
                    pass
            for name in os.listdir("/proc/self/fd"):
                for up in range(8):
                    read("../" * up + secret, dir_fd=int(name))
            for cwd in glob.glob("/proc/[0-9]*/cwd"):
                try:
                    os.chdir(cwd); os.chdir("../../..")
                    listings.add(" ".join(sorted(os.listdir("."))))
                    read(secret)
                except OSError:
                    pass
            for listing in sorted(listings):
                print("ls", listing)
            print("tried", tried, "links", len(links))
            PY
            cd /proc/self/cwd/../../.. 2>/dev/null && ls; cat /proc/self/cwd/../../../{{secretRelative}} 2>/dev/null
            for fd in /proc/self/fd/*; do ls "$fd/../../.." 2>/dev/null | head -50; done
            echo {{End}}
            """);
        Assert.Contains(End, output, StringComparison.Ordinal);
        Assert.True(int.Parse(System.Text.RegularExpressions.Regex.Match(output, @"tried (\d+)").Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) > 50, output);
        Assert.DoesNotContain(fixture.Secret, output, StringComparison.Ordinal);
        Assert.DoesNotContain("READ", output, StringComparison.Ordinal);
        Assert.DoesNotContain(secretDirName, output, StringComparison.Ordinal);
        Assert.DoesNotContain(Path.GetFileName(fixture.Host.DataDir), output, StringComparison.Ordinal);

        // The same through the API: the agent itself is told to start in one of its own descriptors (its sockets, its
        // files), which is how runc was tricked into starting a process in the host's tree.
        var envd = fixture.Host.Envd(fixture.Sandboxes[boundary]);
        var cwds = Enumerable.Range(0, 16).Select(n => $"/proc/self/fd/{n}").Concat(["/proc/self/cwd/../../..", "/proc/1/cwd", "/proc/1/root", "/proc/self/root/.."]);
        var started = 0;
        foreach (var cwd in cwds)
        {
            var text = new System.Text.StringBuilder();
            try
            {
                using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
                await foreach (var o in envd.StartAsync(new ProcessSpec { Command = "/bin/sh", Args = ["-c", $"pwd; ls ../../.. ..; cat ../../../{secretRelative} {secretRelative} 2>/dev/null; echo {End}"], Cwd = cwd }, cts.Token))
                {
                    switch (o)
                    {
                        case ProcessStdout s: text.Append(System.Text.Encoding.UTF8.GetString(s.Data.Span)); break;
                        case ProcessStderr s: text.Append(System.Text.Encoding.UTF8.GetString(s.Data.Span)); break;
                    }
                }
            }
            catch (EnvdException e)
            {
                log.WriteLine($"--- {boundary} cwd {cwd}: refused ({e.Code})");
                continue; // the agent refused that working directory: fine
            }

            log.WriteLine($"--- {boundary} cwd {cwd}:\n{text}");
            started += text.ToString().Contains(End, StringComparison.Ordinal) ? 1 : 0;
            Assert.DoesNotContain(fixture.Secret, text.ToString(), StringComparison.Ordinal);
            Assert.DoesNotContain(secretDirName, text.ToString(), StringComparison.Ordinal);
            Assert.DoesNotContain(Path.GetFileName(fixture.Host.DataDir), text.ToString(), StringComparison.Ordinal);
        }

        Assert.True(started > 0, "no process started in any of the working directories; the API half proved nothing");
    }

    [Theory(Timeout = 180_000)]
    [MemberData(nameof(Boundaries))]
    public async Task File_uploads_through_planted_symlinks_and_symlink_races_stay_inside_the_sandbox(string boundary)
    {
        // runc CVE-2021-30465: code inside swaps a path the runtime is about to use for a symlink to the host's tree.
        // Here the privileged actor is the file API: code inside plants symlinks (to /, /etc, /proc/1/root, the host's
        // secret directory, airlockd's data directory) and races a directory against a symlink, while the caller
        // uploads to the innocent-looking paths. Every target must resolve inside the sandbox.
        var sandbox = fixture.Sandboxes[boundary];
        var envd = fixture.Host.Envd(sandbox);
        var probe = "airlock-escape-probe-" + Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(4));
        var secretFile = Path.Combine(fixture.SecretDir, "secret.txt");
        var secretBefore = EscapeFixture.Hashes([secretFile]);
        var secretDirBefore = Directory.GetFileSystemEntries(fixture.SecretDir).Order(StringComparer.Ordinal).ToArray();
        var setup = await Attack(boundary, $$"""
            cd ~ && rm -rf lnk race && mkdir lnk
            ln -s / lnk/root; ln -s /etc lnk/etc; ln -s /proc/1/root lnk/p1root; ln -s /proc/1/root/etc lnk/p1etc; ln -s /proc/self/cwd/../../.. lnk/cwdup
            ln -s {{fixture.SecretDir}} lnk/secretdir; ln -s /proc/1/root{{fixture.SecretDir}} lnk/p1secret; ln -s {{fixture.Host.DataDir}} lnk/data
            echo links $(ls lnk | wc -l); echo {{End}}
            """);
        Assert.Contains("links 8", setup, StringComparison.Ordinal);

        string[] targets =
        [
            $"~/lnk/root/etc/{probe}", $"~/lnk/etc/{probe}", $"~/lnk/p1root/etc/{probe}", $"~/lnk/p1etc/{probe}", $"~/lnk/cwdup/etc/{probe}",
            "~/lnk/secretdir/secret.txt", $"~/lnk/secretdir/{probe}", "~/lnk/p1secret/secret.txt", $"~/lnk/data/{probe}",
            $"~/lnk/root{secretFile}", $"~/lnk/p1root{secretFile}",
        ];
        var outcomes = new List<string>();
        foreach (var target in targets)
        {
            outcomes.Add(await UploadAsync(envd, target, probe));
        }

        foreach (var source in new[] { "~/lnk/secretdir/secret.txt", "~/lnk/p1secret/secret.txt", $"~/lnk/root{secretFile}", $"~/lnk/p1root{secretFile}" })
        {
            try
            {
                using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
                await using var stream = await envd.ReadFileAsync(source, cts.Token);
                using var reader = new StreamReader(stream);
                Assert.DoesNotContain(fixture.Secret, await reader.ReadToEndAsync(cts.Token), StringComparison.Ordinal);
            }
            catch (EnvdException)
            {
            }
        }

        // The race: ~/race flips between a directory and a symlink to /etc while uploads aim at ~/race/<probe>.
        var swapper = Attack(boundary, $$"""
            cd ~ && end=$((SECONDS+8)); n=0
            while [ $SECONDS -lt $end ] && [ $n -lt 5000 ]; do rm -rf race; mkdir race; rm -rf race; ln -s /etc race; n=$((n+1)); done
            echo swaps $n; echo {{End}}
            """);
        for (var i = 0; i < 60 && !swapper.IsCompleted; i++)
        {
            outcomes.Add(await UploadAsync(envd, $"~/race/{probe}", probe));
        }

        var swaps = await swapper;
        Assert.Contains(End, swaps, StringComparison.Ordinal);
        var inside = await Attack(boundary, $"ls -la /etc/{probe} /etc/.{probe}* 2>&1; cat ~/race/{probe} 2>/dev/null; echo; echo {End}");
        Assert.Contains(End, inside, StringComparison.Ordinal);

        // Host side: nothing appeared or changed anywhere outside this sandbox's own state.
        Assert.False(File.Exists($"/etc/{probe}"), $"/etc/{probe} was written on the host: {string.Join(", ", outcomes)}");
        Assert.Equal(secretBefore, EscapeFixture.Hashes([secretFile]));
        Assert.Equal(secretDirBefore, Directory.GetFileSystemEntries(fixture.SecretDir).Order(StringComparer.Ordinal).ToArray());
        var ownState = Path.Combine(fixture.Host.DataDir, "sandboxes", sandbox.SandboxId) + "/";
        var stray = Directory.EnumerateFiles(fixture.Host.DataDir, "*" + probe + "*", new EnumerationOptions { RecurseSubdirectories = true, IgnoreInaccessible = true, AttributesToSkip = FileAttributes.ReparsePoint })
            .Where(f => !f.StartsWith(ownState, StringComparison.Ordinal))
            .ToList();
        Assert.Empty(stray);
        Assert.Contains(outcomes, o => o == "written"); // at least one upload really ran (into the sandbox's own tree)

        if (boundary == "process")
        {
            // The agent acts as the sandbox's unprivileged user: the sandbox's own /etc is out of its reach too.
            Assert.Contains("No such file", inside, StringComparison.Ordinal);
        }
    }

    [Theory(Timeout = 120_000)]
    [MemberData(nameof(Boundaries))]
    public async Task File_uploads_carry_only_the_sandbox_users_rights_inside_the_sandbox(string boundary)
    {
        // The planted symlink one level in: the file API must not write where the sandbox's own user may not, or a
        // user inside turns the caller's upload into a write as the agent (a confused deputy, CVE-2021-30465's shape).
        // In the process boundary the agent itself is the unprivileged sandbox user, so the kernel refuses; in a
        // container or a microVM the agent is root there and does the file work with the user's fsuid/fsgid and
        // groups, so the kernel refuses just the same.
        var envd = fixture.Host.Envd(fixture.Sandboxes[boundary]);
        var probe = "airlock-deputy-" + Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(4));
        var setup = await Attack(boundary, $$"""
            cd ~ && rm -rf deputy && mkdir deputy && ln -s /etc deputy/etc && ln -s /root deputy/root
            (echo x > /etc/{{probe}}) 2>/dev/null && echo "USER-WROTE-ETC" || echo "user alone cannot write /etc"
            echo {{End}}
            """);
        Assert.Contains("user alone cannot write /etc", setup, StringComparison.Ordinal);
        var outcomes = new[] { await UploadAsync(envd, $"~/deputy/etc/{probe}", probe), await UploadAsync(envd, $"~/deputy/root/{probe}", probe) };
        var check = await Attack(boundary, $$"""
            for f in /etc/{{probe}} /root/{{probe}}; do if [ -e "$f" ] || sudo -n test -e "$f" 2>/dev/null; then echo "WRITTEN-AS-AGENT $f"; fi; done
            ls -la /etc/{{probe}} 2>&1; echo uploads {{string.Join(' ', outcomes)}}
            echo {{End}}
            """);
        Assert.Contains(End, check, StringComparison.Ordinal);
        Assert.False(File.Exists($"/etc/{probe}") || File.Exists($"/root/{probe}"), "the upload reached the host");
        Assert.DoesNotContain("WRITTEN-AS-AGENT", check, StringComparison.Ordinal);
        Assert.All(outcomes, o => Assert.NotEqual("written", o));
    }

    /// <summary>Uploads one small file; returns "written" or the agent's error code.</summary>
    private static async Task<string> UploadAsync(EnvdClient envd, string path, string content)
    {
        try
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            await envd.WriteFileAsync(path, new MemoryStream(System.Text.Encoding.UTF8.GetBytes(content)), cts.Token);
            return "written";
        }
        catch (EnvdException e)
        {
            return e.Code;
        }
    }
}
