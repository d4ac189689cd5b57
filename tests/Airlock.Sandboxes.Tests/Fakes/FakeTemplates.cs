namespace Airlock.Sandboxes.Tests.Fakes;

/// <summary>One template, "base", whose root filesystem is a directory that need not exist.</summary>
internal sealed class FakeTemplates(string rootFs) : ITemplateSource
{
    public bool IsKnown(string templateId, out IReadOnlyCollection<string> known)
    {
        known = ["base"];
        return templateId == "base";
    }

    public Task<string> GetRootFsAsync(string templateId, CancellationToken cancellationToken) => Task.FromResult(rootFs);
}
