-- transform_spec.lua - the shipped lua/transform.lua over plain tables.
package.path = "tests/lua/?.lua;" .. package.path
local H = require("helper")

describe("transform.lua", function()
  local M, gw
  before_each(function()
    gw = H.fake_gw({})
    M = H.load("transform", gw)
  end)

  local function run(attrs, fields, ctx)
    local span = { span_name = "s", attributes = attrs }
    for k, v in pairs(fields or {}) do span[k] = v end
    local out = M.span(span, ctx or { project_id = "p" })
    return out, span
  end

  it("returns the span itself", function()
    local out, span = run({ x = 1 })
    assert.are.equal(span, out)
    assert.are.equal(1, span.attributes.x)
  end)

  it("maps ag.type.* to the upper-case columns and keeps lower-case attributes", function()
    local _, s = run({ ["ag.type.trace"] = "annotation", ["ag.type.span"] = "llm" })
    assert.are.equal("ANNOTATION", s.trace_type)
    assert.are.equal("LLM", s.span_type)
    assert.are.equal("annotation", s.attributes["ag.type.trace"])
    assert.are.equal("llm", s.attributes["ag.type.span"])
  end)

  it("accepts any case and Agenta's legacy tree/node keys", function()
    local _, s = run({ ["ag.type.tree"] = "Invocation", ["ag.type.node"] = "CHAT" })
    assert.are.equal("INVOCATION", s.trace_type)
    assert.are.equal("CHAT", s.span_type)
    assert.are.equal("invocation", s.attributes["ag.type.trace"])
    assert.are.equal("chat", s.attributes["ag.type.span"])
  end)

  it("defaults to INVOCATION / TASK like Agenta, for unknown values too", function()
    local _, s = run({ ["ag.type.trace"] = "bogus", ["ag.type.span"] = 7 })
    assert.are.equal("INVOCATION", s.trace_type)
    assert.are.equal("TASK", s.span_type)
    assert.are.equal("invocation", s.attributes["ag.type.trace"])
    assert.are.equal("task", s.attributes["ag.type.span"])
  end)

  it("keeps a column sent by the client when there is no attribute", function()
    local _, s = run({}, { trace_type = "ANNOTATION", span_type = "TOOL" })
    assert.are.equal("ANNOTATION", s.trace_type)
    assert.are.equal("TOOL", s.span_type)
  end)

  it("maps OpenInference span kinds", function()
    for kind, want in pairs({ RETRIEVER = "QUERY", LLM = "CHAT", RERANKER = "RERANK",
                              GUARDRAIL = "TASK", AGENT = "AGENT" }) do
      local _, s = run({ ["openinference.span.kind"] = kind })
      assert.are.equal(want, s.span_type)
    end
    local _, s = run({ ["openinference.span.kind"] = "LLM", ["ag.type.span"] = "tool" })
    assert.are.equal("TOOL", s.span_type) -- ag.* wins
  end)

  it("promotes ag.session.id and ag.user.id to columns and keeps the attributes", function()
    local _, s = run({ ["ag.session.id"] = "sess", ["ag.user.id"] = "u1" })
    assert.are.equal("sess", s.session_id)
    assert.are.equal("u1", s.user_id)
    assert.are.equal("sess", s.attributes["ag.session.id"])
  end)

  it("maps OpenInference session.id / user.id to ag.* as Agenta does", function()
    local _, s = run({ ["session.id"] = "oi-s", ["user.id"] = 42 })
    assert.are.equal("oi-s", s.session_id)
    assert.are.equal("42", s.user_id)
    assert.are.equal("oi-s", s.attributes["ag.session.id"])
    assert.are.equal(42, s.attributes["ag.user.id"])
    assert.are.equal("oi-s", s.attributes["session.id"])
  end)

  it("prefers ag.session.id over session.id", function()
    local _, s = run({ ["session.id"] = "oi", ["ag.session.id"] = "ag" })
    assert.are.equal("ag", s.session_id)
    assert.are.equal("oi", s.attributes["session.id"])
  end)

  it("ignores ids that are not text or numbers", function()
    local _, s = run({ ["ag.session.id"] = { x = 1 }, ["ag.user.id"] = "" }, { session_id = "kept" })
    assert.are.equal("kept", s.session_id)
    assert.is_nil(s.user_id)
  end)

  it("fills agent_id from ag.agent.id, else gen_ai.agent.id", function()
    local _, s = run({ ["gen_ai.agent.id"] = "g" })
    assert.are.equal("g", s.agent_id)
    _, s = run({ ["gen_ai.agent.id"] = "g", ["ag.agent.id"] = "a" })
    assert.are.equal("a", s.agent_id)
  end)

  it("asks for nesting, with the resource when there is one and no own resource", function()
    local _, s = run({ x = 1 }, nil, { resource = { ["service.name"] = "svc" } })
    assert.is_true(s._nest)
    assert.is_true(s._with_resource)
    _, s = run({ resource = "mine" }, nil, { resource = { ["service.name"] = "svc" } })
    assert.is_true(s._nest)
    assert.is_false(s._with_resource)
    _, s = run({ x = 1 })
    assert.is_false(s._with_resource)
  end)

  it("creates attributes for a span that has none", function()
    local _, s = run(nil)
    assert.are.equal("invocation", s.attributes["ag.type.trace"])
    assert.are.equal("TASK", s.span_type)
  end)

  it("writes ag.type.trace / ag.type.span for legacy keys already in lower case", function()
    local _, s = run({ ["ag.type.tree"] = "invocation", ["ag.type.node"] = "chat" })
    assert.are.equal("invocation", s.attributes["ag.type.trace"])
    assert.are.equal("chat", s.attributes["ag.type.span"])
    assert.are.equal("invocation", s.attributes["ag.type.tree"]) -- kept, lossless
  end)

  it("writes integer ids in full, int64 cdata too", function()
    local _, s = run({ ["ag.session.id"] = 2^60, ["ag.user.id"] = 1.5,
                       ["ag.agent.id"] = -9223372036854775807LL })
    assert.are.equal("1152921504606846976", s.session_id)
    assert.are.equal("1.5", s.user_id)
    assert.are.equal("-9223372036854775807", s.agent_id)
  end)

  it("M.span is M.normalize without the built-in, gw.agenta.normalize with it", function()
    assert.are.equal(M.normalize, M.span)
    local builtin = function() end
    gw.agenta = { normalize = builtin }
    M = H.load("transform", gw)
    assert.are.equal(builtin, M.span)
  end)

  it("does not write attributes that are already normal", function()
    local writes = 0
    local attrs = setmetatable({}, {
      __index = { ["ag.type.trace"] = "invocation", ["ag.type.span"] = "llm", ["ag.session.id"] = "s" },
      __newindex = function(t, k, v) writes = writes + 1 rawset(t, k, v) end,
    })
    run(attrs)
    assert.are.equal(0, writes)
  end)
end)
