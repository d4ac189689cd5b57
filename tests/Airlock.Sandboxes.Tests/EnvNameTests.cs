using Airlock.Core.Sandboxes;

namespace Airlock.Sandboxes.Tests;

/// <summary>Environment variable names at create are POSIX names; anything else is an invalid argument before anything starts.</summary>
public sealed class EnvNameTests
{
    [Theory(Timeout = 10_000)]
    [InlineData("A B")]
    [InlineData("A\nB")]
    [InlineData("1ABC")]
    [InlineData("A-B")]
    [InlineData("A.B")]
    [InlineData("ÄB")]
    [InlineData("A\u00a0B")]
    [InlineData("")]
    public async Task A_name_that_is_not_a_POSIX_name_is_an_invalid_argument(string name)
    {
        await using var h = new LifecycleHarness();

        var ex = await Assert.ThrowsAsync<SandboxException>(() => h.CreateAsync(LifecycleHarness.Spec() with { Env = new Dictionary<string, string> { [name] = "1" } }));

        Assert.Equal((SandboxErrorKind.InvalidArgument, "invalid_env"), (ex.Kind, ex.Code));
        Assert.DoesNotContain('\n', ex.Message); // the name is shown escaped, never as a raw line break
        Assert.Empty(h.Store.Sandboxes);
        Assert.Equal(0, h.Process.Starts);
    }

    [Fact(Timeout = 10_000)]
    public async Task A_name_longer_than_256_characters_is_an_invalid_argument()
    {
        await using var h = new LifecycleHarness();

        var ex = await Assert.ThrowsAsync<SandboxException>(() => h.CreateAsync(LifecycleHarness.Spec() with { Env = new Dictionary<string, string> { [new string('A', 257)] = "1" } }));

        Assert.Equal("invalid_env", ex.Code);
    }

    [Theory(Timeout = 10_000)]
    [InlineData("_")]
    [InlineData("_private")]
    [InlineData("PATH2")]
    [InlineData("lower_case_9")]
    public async Task POSIX_names_are_accepted(string name)
    {
        await using var h = new LifecycleHarness();

        var sandbox = await h.CreateAsync(LifecycleHarness.Spec() with { Env = new Dictionary<string, string> { [name] = "a b\nc" } });

        Assert.Equal("a b\nc", h.Store[sandbox.Record.SandboxId].EnvVars[name]);
    }

    [Fact(Timeout = 10_000)]
    public async Task A_value_with_a_NUL_byte_is_an_invalid_argument()
    {
        await using var h = new LifecycleHarness();

        var ex = await Assert.ThrowsAsync<SandboxException>(() => h.CreateAsync(LifecycleHarness.Spec() with { Env = new Dictionary<string, string> { ["A"] = "x\0y" } }));

        Assert.Equal("invalid_env", ex.Code);
    }
}
