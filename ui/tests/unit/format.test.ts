import { describe, expect, it } from "vitest";
import { uploadsText } from "../../src/lib/format";
import type { NetworkStatus } from "../../src/bindings";

const base: NetworkStatus = {
  uploads: { kind: "yielding" },
  rule: "no rule applies: yielding to other traffic",
  from_organisation: false,
  rate_mbps: 8.2,
  capacity_mbps: 9.1,
  other_traffic_mbps: null,
  metered: false,
  network: "Office",
  on_battery: null,
  sources: [],
};

describe("uploadsText", () => {
  it("names the rule and who made it", () => {
    expect(uploadsText({ ...base, uploads: { kind: "paused" }, rule: "metered connection", from_organisation: true })).toBe(
      "Paused: metered connection (your organisation's rule)",
    );
    expect(uploadsText({ ...base, uploads: { kind: "limited", mbps: 2 }, rule: "guest Wi-Fi" })).toBe(
      "At most 2 Mbit/s, giving way to your own traffic: guest Wi-Fi",
    );
  });

  it("says plainly when no rule applies", () => {
    expect(uploadsText(base)).toBe("Giving way to your own traffic");
  });

  it("says how much of the user's own traffic it makes room for", () => {
    expect(uploadsText({ ...base, other_traffic_mbps: 3.24 })).toBe("Giving way to your own traffic (now 3.2 Mbit/s)");
  });
});
