using System.Diagnostics;
using Airlock.Templates;
using Microsoft.Extensions.Logging.Abstractions;

namespace Airlock.Templates.Tests;

[Trait("Category", "Integration")]
public sealed class BaseTemplateTests
{
    /// <summary>The shared cache the rest of the suite uses (AIRLOCK_TEMPLATES_DIR, else /var/lib/airlock/templates).</summary>
    private static string TemplatesDir => Environment.GetEnvironmentVariable("AIRLOCK_TEMPLATES_DIR") ?? "/var/lib/airlock/templates";

    private static BaseTemplateBuilder Builder() => new(TemplatesDir, NullLogger<BaseTemplateBuilder>.Instance);

    [Fact(Timeout = 600_000)]
    public async Task Base_is_debian_bookworm_with_the_promised_tools_and_user()
    {
        var rootfs = await Builder().EnsureBuiltAsync(null, CancellationToken.None);
        Assert.Contains("VERSION_CODENAME=bookworm", await File.ReadAllTextAsync(Path.Combine(rootfs, "etc/os-release")));
        foreach (var tool in new[] { "usr/bin/bash", "usr/bin/python3", "usr/bin/ps", "usr/bin/uname", "usr/bin/id" })
        {
            Assert.True(File.Exists(Path.Combine(rootfs, tool)), $"{tool} missing from the base template");
        }

        Assert.True(Directory.Exists(Path.Combine(rootfs, "etc/ssl/certs")), "ca-certificates missing");
        var passwd = await File.ReadAllLinesAsync(Path.Combine(rootfs, "etc/passwd"));
        Assert.Contains(passwd, l => l.StartsWith("user:x:1000:1000:", StringComparison.Ordinal) && l.EndsWith(":/home/user:/bin/bash", StringComparison.Ordinal));
        Assert.True(Directory.Exists(Path.Combine(rootfs, "home/user")));
        Assert.False(Directory.EnumerateFileSystemEntries(Path.Combine(rootfs, "var/lib/apt/lists")).Any(e => e.EndsWith("Packages", StringComparison.Ordinal)), "apt lists should be cleaned");
    }

    [Fact(Timeout = 600_000)]
    public async Task A_current_cache_is_reused_and_concurrent_callers_build_once()
    {
        var builder = Builder();
        await builder.EnsureBuiltAsync(null, CancellationToken.None);
        var marker = File.GetLastWriteTimeUtc(builder.CompleteMarker);
        var clock = Stopwatch.StartNew();
        var paths = await Task.WhenAll(Builder().EnsureBuiltAsync(null, CancellationToken.None), Builder().EnsureBuiltAsync(null, CancellationToken.None));
        clock.Stop();
        Assert.All(paths, p => Assert.Equal(builder.RootFs, p));
        Assert.Equal(marker, File.GetLastWriteTimeUtc(builder.CompleteMarker));
        Assert.True(builder.IsCurrent());
    }

    [Fact]
    public void Unknown_templates_are_not_resolved_and_the_catalog_names_the_known_ones()
    {
        var catalog = new TemplateCatalog();
        Assert.True(catalog.TryResolve("base", out var info));
        Assert.Equal("base", info.TemplateId);
        Assert.False(catalog.TryResolve("no-such-template", out _));
        Assert.False(catalog.TryResolve(null, out _));
        Assert.False(catalog.TryResolve("../base", out _));
        Assert.Equal(["base"], catalog.Known);
    }

    [Fact(Timeout = 60_000)]
    public async Task A_missing_marker_with_a_stale_hash_is_not_current()
    {
        var dir = Directory.CreateTempSubdirectory("airlock-tpl-");
        try
        {
            var builder = new BaseTemplateBuilder(dir.FullName, NullLogger<BaseTemplateBuilder>.Instance);
            Directory.CreateDirectory(builder.RootFs);
            Assert.False(builder.IsCurrent());
            await File.WriteAllTextAsync(builder.CompleteMarker, "stale\n");
            Assert.False(builder.IsCurrent());
            await File.WriteAllTextAsync(builder.CompleteMarker, BaseTemplateBuilder.InputsHash + "\n");
            Assert.True(builder.IsCurrent());
        }
        finally
        {
            dir.Delete(recursive: true);
        }
    }
}
