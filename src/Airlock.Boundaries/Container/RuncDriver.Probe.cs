using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Airlock.Boundaries.Cgroups;
using Airlock.Boundaries.Layers;
using Airlock.Core.Drivers;
using Airlock.Core.Sandboxes;

namespace Airlock.Boundaries.Container;

/// <summary>What the container boundary needs from the host, proven by running a container configured as sandboxes are.</summary>
public sealed partial class RuncDriver
{
    public Task<DriverAvailability> ProbeAsync(CancellationToken cancellationToken) => _probe.GetAsync(ProbeUncachedAsync, cancellationToken);

    private async Task<DriverAvailability> ProbeUncachedAsync(CancellationToken cancellationToken)
    {
        var missing = new List<string>();
        if (NativeMethods.geteuid() != 0)
        {
            missing.Add("root (airlockd runs the OCI runtime, mounts layers and creates cgroups)");
        }

        foreach (var tool in new[] { "nsenter", "setpriv", "unshare", "mkfs.ext4", "mount" })
        {
            if (await HostTools.TryRunAsync(tool, ["--version"], cancellationToken) is null)
            {
                missing.Add($"{tool} (util-linux / e2fsprogs)");
            }
        }

        if (!File.Exists(_options.Init))
        {
            missing.Add($"a static init at {_options.Init} (apt install tini)");
        }

        if (!File.Exists("/dev/loop-control"))
        {
            missing.Add("loop devices (/dev/loop-control; modprobe loop): the disk quota is a loop-mounted ext4 layer");
        }

        if (_cgroups.Probe() is { } cgroupProblem)
        {
            missing.Add(cgroupProblem);
        }

        _seccomp = ContainerSeccomp.Build();
        if (missing.Count > 0)
        {
            return Unavailable(missing);
        }

        // Prove each runtime with the very configuration sandboxes get (user namespace, seccomp, cgroup limits, masked
        // paths) on a throwaway root holding a static busybox; a runtime is offered only if that container runs. Only
        // when no runtime can use a user namespace here is one offered without it, and every report then says so.
        var candidates = _options.Runtime == "auto" ? new[] { "crun", "runc" } : [_options.Runtime];
        var versions = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var runtime in candidates)
        {
            var version = await HostTools.TryRunAsync(runtime, ["--version"], cancellationToken);
            if (version is { ExitCode: 0 })
            {
                versions[runtime] = version.StandardOutput.Split('\n')[0].Replace("runc version ", string.Empty, StringComparison.Ordinal).Replace("crun version ", string.Empty, StringComparison.Ordinal).Trim();
            }
            else if (runtime != "crun" || _options.Runtime == "crun")
            {
                missing.Add($"{runtime} (apt install {runtime})");
            }
        }

        string? usernsProblem = null;
        foreach (var userns in _options.UserNamespace == false ? new[] { false } : [true, false])
        {
            foreach (var runtime in candidates.Where(versions.ContainsKey))
            {
                _userns = userns;
                var problem = await ProbeRuntimeAsync(runtime, cancellationToken);
                if (problem is null)
                {
                    _runtime = runtime;
                    _version = versions[runtime];
                    UserNamespaceProblem = userns ? null : usernsProblem ?? "turned off by configuration";
                    return new DriverAvailability(Boundary, Name, true,
                        $"{runtime} {_version}, cgroup {_cgroups.Mode}, seccomp {_seccomp.Value.Description}, userns {(userns ? "yes" : $"no ({UserNamespaceProblem})")}"
                        + (CrunStatus is null ? "" : $"; {CrunStatus}"));
                }

                if (runtime == "crun" && userns)
                {
                    CrunStatus = $"crun refused here: {problem}";
                }
                else if (userns)
                {
                    usernsProblem ??= problem;
                }
                else
                {
                    missing.Add($"{runtime} cannot run Airlock's container configuration here: {usernsProblem ?? problem}");
                }
            }
        }

        if (missing.Count == 0)
        {
            missing.Add(CrunStatus ?? $"no usable OCI runtime ({_options.Runtime})");
        }

        return Unavailable(missing);
    }

    /// <summary>Why containers run without a user namespace on this host (null: they run with one).</summary>
    public string? UserNamespaceProblem { get; private set; }

    private DriverAvailability Unavailable(List<string> missing) =>
        new(Boundary, Name, false, "the container boundary needs: " + string.Join("; ", missing)) { Missing = missing };

    /// <summary>Runs <c>busybox true</c> in a container configured as sandboxes are; null when it ran.</summary>
    private async Task<string?> ProbeRuntimeAsync(string runtime, CancellationToken cancellationToken)
    {
        var busybox = new[] { "/bin/busybox", "/usr/bin/busybox" }.FirstOrDefault(File.Exists);
        if (busybox is null)
        {
            return "no static busybox to probe with (apt install busybox-static)";
        }

        var id = "probe-" + Guid.NewGuid().ToString("N")[..8];
        var dir = Path.Combine(_options.DataDir, "tmp", id);
        var rootfs = Path.Combine(dir, "rootfs");
        var netns = "airlock-" + id;
        try
        {
            Directory.CreateDirectory(Path.Combine(rootfs, "bin"));
            foreach (var sub in new[] { "proc", "dev", "sys", "tmp", "var/tmp" })
            {
                Directory.CreateDirectory(Path.Combine(rootfs, sub));
            }

            File.Copy(busybox, Path.Combine(rootfs, "bin", "busybox"));
            var idBase = _options.IdBase + (uint)(4096 * _options.IdsPerSandbox); // far from any sandbox's range
            foreach (var path in Directory.EnumerateFileSystemEntries(rootfs, "*", SearchOption.AllDirectories).Prepend(rootfs))
            {
                NativeMethods.lchown(path, idBase, idBase); // the probe's root owns its root, as a sandbox's does
            }

            if (await HostTools.TryRunAsync("ip", ["netns", "add", netns], cancellationToken) is not { ExitCode: 0 } added)
            {
                return "could not create a network namespace to probe with";
            }

            var limits = new SandboxLimits { MemoryMiB = 64, Pids = 16 };
            var cgroupsPath = $"/airlock/{id}";
            var spec = BuildSpec(rootfs, ["/bin/busybox", "true"], [], "probe", $"/run/netns/{netns}", _userns ? idBase : null, limits, cgroupsPath, mountAgent: false);
            var bundle = Path.Combine(dir, "bundle");
            Directory.CreateDirectory(bundle);
            await File.WriteAllBytesAsync(Path.Combine(bundle, "config.json"), JsonSerializer.SerializeToUtf8Bytes(spec, OciJsonContext.Default.OciSpec), cancellationToken);
            WritableLayer.MakeTraversable(dir, _options.DataDir);
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(TimeSpan.FromSeconds(20));
            var run = await HostTools.TryRunAsync(runtime, ["--root", Path.Combine(_options.StateRoot, runtime), "run", "--bundle", bundle, id], timeout.Token);
            return run switch
            {
                null => $"{runtime} is not installed",
                { ExitCode: 0 } => null,
                _ => $"{(run.StandardError + run.StandardOutput).Trim().Split('\n').LastOrDefault()} (exit {run.ExitCode})",
            };
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return "the probe container did not finish within 20 s";
        }
        finally
        {
            await HostTools.TryRunAsync(runtime, ["--root", Path.Combine(_options.StateRoot, runtime), "delete", "--force", id], CancellationToken.None);
            await _cgroups.DestroyAsync(id, CancellationToken.None);
            await HostTools.TryRunAsync("ip", ["netns", "del", netns], CancellationToken.None);
            try
            {
                Directory.Delete(dir, recursive: true);
            }
            catch (DirectoryNotFoundException)
            {
                // already gone (the data directory of a stopping airlockd may be removed under a late probe)
            }
        }
    }
}
