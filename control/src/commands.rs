pub struct CheckArgs; pub struct ConformanceArgs; pub struct ExplainArgs; pub struct ReachArgs;
