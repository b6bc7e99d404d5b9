import { describe, expect, it } from "vitest";
import { destinationFor, parseEnrolLink, storageProblems } from "../../src/lib/setup";

describe("enrolment links", () => {
  it("reads tidemark:// links and web links with a code", () => {
    expect(parseEnrolLink("tidemark://enroll?server=https://backup.example.com/&code=AB-12")).toEqual({
      server: "https://backup.example.com",
      code: "AB-12",
    });
    expect(parseEnrolLink(" https://backup.example.com:8443/enroll?code=XY ")).toEqual({
      server: "https://backup.example.com:8443",
      code: "XY",
    });
  });

  it("refuses links without a code or with a strange server", () => {
    expect(parseEnrolLink("https://backup.example.com/")).toBeNull();
    expect(parseEnrolLink("tidemark://enroll?server=ftp://x&code=1")).toBeNull();
    expect(parseEnrolLink("not a link")).toBeNull();
  });
});

describe("own storage form", () => {
  it("accepts a folder with a good password", () => {
    expect(storageProblems("folder", "/media/usb", "longenough", "longenough", true)).toEqual([]);
    expect(destinationFor("folder", " /media/usb ")).toEqual({ kind: "folder", path: "/media/usb" });
    expect(destinationFor("s3", "s3://b/p")).toEqual({ kind: "remote", url: "s3://b/p" });
  });

  it("says what is wrong", () => {
    expect(storageProblems("folder", "", "x", "", true)).toEqual([
      "Choose a folder.",
      "The password needs at least 8 characters.",
    ]);
    expect(storageProblems("s3", "http://x", "longenough", "other", true)).toEqual([
      "The address must start with s3://",
      "The two passwords differ.",
    ]);
    // An existing repository needs no repeated password.
    expect(storageProblems("sftp", "sftp://u@h/p", "longenough", "", false)).toEqual([]);
  });
});
