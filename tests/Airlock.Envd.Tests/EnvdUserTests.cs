using Airlock.Envd.Inspection;

namespace Airlock.Envd.Tests;

public sealed class EnvdUserTests
{
    [Theory]
    [InlineData("Basic cm9vdDo=", "root")] // base64("root:"), what the e2b SDK sends for { user: 'root' }
    [InlineData("basic cm9vdDo=", "root")]
    [InlineData("Basic  cm9vdDo= ", "root")]
    [InlineData("Basic cm9vdA==", "root")] // no colon: the whole value is the name
    [InlineData("Basic YWxpY2U6c2VjcmV0", "alice")] // a password is ignored
    [InlineData("Basic dXNlcjo=", "user")]
    public void A_named_user_is_read_from_basic_credentials(string header, string expected)
    {
        Assert.True(EnvdUser.TryRead(header, out var user));
        Assert.Equal(expected, user);
    }

    [Theory]
    [InlineData(null)] // the SDK names no user: the agent's default
    [InlineData("")]
    [InlineData("Bearer abc")]
    [InlineData("Basic Og==")] // base64(":"): an empty name
    public void No_named_user_means_the_default_user(string? header)
    {
        Assert.True(EnvdUser.TryRead(header, out var user));
        Assert.Equal(EnvdUser.Default, user);
        Assert.Equal("user", user);
    }

    [Fact]
    public void Basic_credentials_that_are_not_base64_are_refused()
    {
        Assert.False(EnvdUser.TryRead("Basic not*base64", out _));
    }
}
