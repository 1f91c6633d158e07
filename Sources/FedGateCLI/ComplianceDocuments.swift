import FedGateStore
import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif

/// The audit trail as XML, built with Foundation's XML support (libxml2 on Linux): one <chain> per
/// source with its verification, one <record> per kept record, the payload as its canonical JSON.
enum AuditXML {
    static func document(_ trails: [AuditTrail], filter: AuditFilter) -> String {
        let root = XMLElement(name: "audit")
        root.addAttribute(XMLNode.attribute(withName: "exported", stringValue: AuditExport.timestamp(Date())) as! XMLNode)
        for t in trails {
            let chain = XMLElement(name: "chain")
            chain.addAttribute(XMLNode.attribute(withName: "source", stringValue: t.source) as! XMLNode)
            chain.addAttribute(XMLNode.attribute(withName: "intact", stringValue: t.intact ? "true" : "false") as! XMLNode)
            chain.addAttribute(XMLNode.attribute(withName: "records", stringValue: String(t.records.count)) as! XMLNode)
            chain.addChild(XMLElement(name: "verification", stringValue: t.verification.description))
            for r in t.records where filter.keeps(r) {
                let e = XMLElement(name: "record")
                for (name, value) in [("seq", String(r.seq)), ("at", AuditExport.timestamp(r.at)), ("actor", r.actor), ("action", r.action),
                                      ("subject", r.subject), ("previous_hash", r.previousHash), ("hash", r.hash)] {
                    e.addAttribute(XMLNode.attribute(withName: name, stringValue: value) as! XMLNode)
                }
                e.addChild(XMLElement(name: "payload", stringValue: r.payload))
                chain.addChild(e)
            }
            root.addChild(chain)
        }
        let document = XMLDocument(rootElement: root)
        document.version = "1.0"
        document.characterEncoding = "UTF-8"
        return document.xmlString(options: [.nodePrettyPrint]) + "\n"
    }
}

/// A self-contained HTML report for compliance officers: no scripts, no external files.
enum ComplianceHTML {
    static func document(_ report: ComplianceReport, filter: AuditFilter, title: String = "FedGate compliance report") -> String {
        let body = "<h1>\(e(title))</h1>\n<p class=meta>Exported \(e(AuditExport.timestamp(Date())))\(scope(filter))</p>\n"
            + governance(report) + people(report) + privacySpent(report) + outcomes(report)
        return """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><title>\(e(title))</title>
        <style>
        body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:72rem;color:#1d2430;padding:0 1rem}
        h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #d6dbe3;padding-bottom:.2rem}
        table{border-collapse:collapse;width:100%;font-size:.85rem;margin:.5rem 0}th,td{border:1px solid #d6dbe3;padding:.3rem .5rem;text-align:left;vertical-align:top}
        th{background:#f1f4f8}code{font-size:.8rem}.ok{color:#17743a;font-weight:600}.bad{color:#b42318;font-weight:600}.mid{color:#8a6100}
        .meta,.empty{color:#5b6677}svg{background:#fbfcfe;border:1px solid #d6dbe3;margin:.5rem 0}
        </style></head><body>
        \(body)</body></html>

        """
    }

    /// The chains' verification, the plans, the consent basis and the policy decisions.
    static func governance(_ report: ComplianceReport) -> String {
        var body = ""
        body += "<h2>Audit chain verification</h2>\n"
        body += table(["Source", "Records", "Result"], report.chains.map { c in
            let ok: Bool = { if case .intact = c.verification { return true } else { return false } }()
            return [e(c.source), "\(c.records)", "<span class=\(ok ? "ok" : "bad")>\(e(c.verification.description))</span>"]
        })
        if !report.unreadable.isEmpty {
            // Records in an intact chain whose payload does not fit their action: not in the tables below.
            body += "<h2 class=bad>Records this report could not read</h2>\n"
            body += table(["Source", "Record", "Action", "Problem"], report.unreadable.map {
                [e($0.source), "\($0.seq)", e($0.action), e($0.problem)]
            })
        }

        body += "<h2>Plans</h2>\n"
        body += table(["Plan", "Purpose", "Data and columns", "Rounds, strategy, quorum", "Privacy", "Submitted by", "Outcome"], report.plans.map { p in
            let s = p.submission
            let data = (s.datasets?.joined(separator: ", ") ?? "–") + (s.columns.map { ": \($0.joined(separator: ", "))" } ?? "")
            let privacy = (s.dp ?? "not recorded") + (s.secureAggregation.map { $0 ? "; secure aggregation" : "; no secure aggregation" } ?? "")
            let outcome = p.outcome.map { "<span class=\($0.state == "finished" ? "ok" : "bad")>\(e($0.state))</span>\($0.reason.map { ": " + e($0) } ?? "")" }
                ?? "<span class=mid>running</span>"
            return [code(p.hash), e(p.purpose), e(data), e("\(p.rounds), \(p.strategy)\(s.quorum.map { ", quorum \($0)" } ?? "")"), e(privacy),
                    e(p.submittedBy) + "<br>" + e(AuditExport.timestamp(p.at)), outcome]
        }, empty: "No plan was submitted in this trail.")
        if !report.awaitedApprovals.isEmpty {
            body += table(["Plan", "Waited before its first round for approval at", "Since"], report.awaitedApprovals.map {
                [code($0.plan), e($0.silos.joined(separator: ", ")), e(AuditExport.timestamp($0.at))]
            })
        }

        body += "<h2>Consent basis</h2>\n"
        body += table(["Source", "Data set", "Purpose", "Legal basis", "Scope"], report.consents.map {
            [e($0.source), e($0.dataset), e($0.purpose), e($0.basis), e($0.scope)]
        }, empty: "No consent records in this trail (they are kept in each silo's store).")

        body += "<h2>Policy decisions</h2>\n"
        body += table(["Silo", "Plan", "Outcome", "Reasons", "At"], report.decisions.map {
            [e($0.silo), code($0.plan), "<span class=\($0.outcome == "accepted" ? "ok" : ($0.outcome == "refused" ? "bad" : "mid"))>\(e($0.outcome))</span>",
             e($0.reasons.joined(separator: "; ")), e(AuditExport.timestamp($0.at))]
        }, empty: "No policy decisions in this trail (each silo records its own).")
        return body
    }

    /// Approvals by people at the silos, the data sets' caps, and the parties' enrolments, renewals and revocations.
    static func people(_ report: ComplianceReport) -> String {
        var body = "<h2>Approvals</h2>\n"
        body += "<p class=meta>The approver is the name given to <code>fedgate plan approve --actor</code> at the silo: self-declared, "
            + "not taken from a certificate. The silo's chain records when it was given.</p>\n"
        body += table(["Silo", "Plan", "Decision", "By", "At"], report.approvals.map {
            [e($0.silo), code($0.plan), "<span class=\($0.approved ? "ok" : "bad")>\($0.approved ? "approved" : "rejected")</span>", e($0.actor),
             e(AuditExport.timestamp($0.at))]
        }, empty: "No approvals in this trail (each silo records its own).")
        body += "<h2>Privacy budgets</h2>\n"
        body += table(["Source", "Data set", "Per plan", "Rolling window", "Lifetime", "δ at most"], report.caps.map { c in
            [e(c.source), e(c.dataset), fmt(c.perPlan, digits: 2), c.window.map { "\(fmt($0, digits: 2)) per \(c.windowDays ?? 0) days" } ?? "–",
             c.lifetime.map { fmt($0, digits: 2) } ?? "–", "\(c.delta)"]
        }, empty: "No budgets in this trail (each silo sets its own).")
        body += "<h2>Parties: enrolments, renewals, revocations</h2>\n"
        body += table(["At", "Event", "Who", "Detail"], report.parties.map {
            [e(AuditExport.timestamp($0.at)), e($0.action), e($0.subject), code($0.detail)]
        }, empty: "No enrolment, renewal or revocation in this trail.")
        return body
    }

    /// ε over time per silo, and the final model's accuracy at each.
    static func privacySpent(_ report: ComplianceReport) -> String {
        var body = ""
        body += "<h2>Privacy spent per silo over time</h2>\n"
        if report.epsilonSeries.isEmpty {
            body += "<p class=empty>No ledger commits in this trail.</p>\n"
        } else {
            for s in report.epsilonSeries { body += chart(s) }
        }
        body += "<h3>What left each silo, per plan</h3>\n<p class=meta>With DP: the releases its ledger committed, as DP events. "
            + "Without DP: what its policy lets leave exactly (releases.without_dp) when it decided on the plan.</p>\n"
        body += table(["Plan", "Silo", "Released with DP (ledger)", "Released without DP (policy)"], report.releases.map { r in
            [code(r.plan), e(r.silo),
             r.withDP.map { "\(e($0.what)) ×\($0.count): <code>\(e($0.event))</code>" }.joined(separator: "<br>"),
             (r.withoutDP.isEmpty ? "nothing listed" : e(r.withoutDP.joined(separator: ", ")))
                + (r.evaluationNoiseMultiplier.map { "; final evaluation with DP, noise multiplier \(fmt($0, digits: 2))" } ?? "")]
        }, empty: "No silo trail in this export records a decision or a ledger commit.")
        if !report.gates.isEmpty {
            var rows: [[String]] = []
            for g in report.gates {
                for (silo, acc) in g.silos.sorted(by: { $0.key < $1.key }) { rows.append([code(g.plan), e(silo), fmt(acc), g.personalised[silo].map(fmt) ?? "–"]) }
            }
            body += "<h3>Final-model accuracy per silo</h3>\n" + table(["Plan", "Silo", "Global model", "Personalised"], rows)
        }
        return body
    }

    /// Participation per round, the model versions with their gates, and what was refused.
    static func outcomes(_ report: ComplianceReport) -> String {
        var body = ""
        body += "<h2>Participation per round</h2>\n"
        body += table(["Plan", "Round", "State", "Participants", "Update bytes", "Why aborted"], report.rounds.map {
            [code($0.plan), $0.run > 1 ? "\($0.number) (run \($0.run))" : "\($0.number)", "<span class=\($0.state == "committed" ? "ok" : ($0.state == "aborted" ? "bad" : "mid"))>\(e($0.state))</span>",
             e($0.participants.joined(separator: ", ")), $0.traffic.map(traffic) ?? "–", e($0.reason ?? "")]
        }, empty: "No rounds in this trail.")

        body += "<h2>Model versions and their gates</h2>\n"
        body += table(["Plan", "Round", "Gate", "Accuracy", "Slices", "Reasons", "At"], report.gates.map {
            [code($0.plan), "\($0.round)", "<span class=\($0.passed ? "ok" : "bad")>\($0.passed ? "passed" : "held back")</span>",
             $0.accuracy.map(fmt) ?? "–", $0.slices.isEmpty ? "–" : e($0.slices.sorted { $0.key < $1.key }.map { "\($0.key) \(fmt($0.value))" }.joined(separator: ", ")),
             e($0.reasons.joined(separator: "; ")), e(AuditExport.timestamp($0.at))]
        }, empty: "No model was evaluated in this trail.")
        body += table(["Version", "Event", "Plan", "Round", "Content SHA-256", "By", "At"], report.versions.map {
            ["v\($0.version)", e($0.action), $0.plan.isEmpty ? "" : code($0.plan), $0.round == 0 ? "" : "\($0.round)",
             $0.contentSHA256.isEmpty ? "" : code($0.contentSHA256), e($0.actor), e(AuditExport.timestamp($0.at))]
        }, empty: "No model versions.")

        body += deployments(report)
        body += attacks(report)

        body += "<h2>Refusals</h2>\n"
        body += table(["At", "What", "Who", "Reason"], report.refusals.map {
            [e(AuditExport.timestamp($0.at)), e($0.action), e($0.subject), e($0.reason)]
        }, empty: "Nothing was refused.")
        return body
    }

    /// Registry versions deployed to silos, their monitoring checks, the alerts and the rollbacks.
    static func deployments(_ report: ComplianceReport) -> String {
        var body = "<h2>Deployments</h2>\n<p class=meta>Registry versions sent to silos (a canary to named silos, then to all), each silo's answer, "
            + "and its monitoring checks on fresh rows, released with DP: a watched column's population stability index (PSI) and the "
            + "accuracy where rows carry labels. A failed check raises an alert and sends the silos back to the version they ran before; "
            + "the rollback time runs from the alert to the last silo back.</p>\n"
        body += table(["Deployment", "Version", "Stage", "Silos", "Gate", "By", "At", "Rollback"], report.deployments.map { d in
            ["\(d.id)", "v\(d.version)", e(d.stage), e(d.silos.joined(separator: ", ")),
             e("PSI ≤ \(fmt(d.maxPSI))" + (d.minAccuracy.map { ", accuracy ≥ \(fmt($0))" } ?? "") + " on \(d.watch.joined(separator: ", "))"),
             e(d.by), e(AuditExport.timestamp(d.at)),
             d.rollbackSeconds.map { "<span class=bad>rolled back</span> in \(String(format: "%.3f", $0)) s" } ?? "–"]
        }, empty: "No version was deployed in this trail.")
        if !report.deploymentAlerts.isEmpty {
            body += report.deploymentAlerts.map { a in
                "<p><span class=bad>alert</span> deployment \(a.deployment) (v\(a.version)) at \(e(a.silo)): \(e(a.reasons.joined(separator: "; "))); "
                    + "back to \(e(a.back.sorted { $0.key < $1.key }.map { "\($0.key) v\($0.value)" }.joined(separator: ", "))) (\(e(AuditExport.timestamp(a.at))))</p>\n"
            }.joined()
        }
        let checks = report.deployments.flatMap { d in d.checks.map { (d.id, $0) } }
        body += table(["Deployment", "Silo", "Version", "Accuracy", "Largest PSI (p-value)", "Result", "At"], checks.map { id, c in
            ["\(id)", e(c.silo), "v\(c.version)", c.accuracy.map(fmt) ?? "–",
             c.worst.map { w in e("\(w.column) \(fmt(w.psi))") + (w.p.map { String(format: " (p %.2g)", $0) } ?? "") } ?? "–",
             c.reasons.isEmpty ? "<span class=ok>passed</span>" : "<span class=bad>failed</span> \(e(c.reasons.joined(separator: "; ")))",
             e(AuditExport.timestamp(c.at))]
        }, empty: "No monitoring check arrived.")
        return body
    }

    /// A round's update bytes, with float32's and the ratio when a codec made them fewer.
    static func traffic(_ t: ComplianceReport.Round.Traffic) -> String {
        guard t.bytesIn > 0, t.rawBytes > t.bytesIn else { return "\(t.bytesIn)" }
        return "\(t.bytesIn) (float32 \(t.rawBytes), " + String(format: "%.2f× fewer)", Double(t.rawBytes) / Double(t.bytesIn))
    }

    /// Poisoning flags per round and the alerts they raised.
    static func attacks(_ report: ComplianceReport) -> String {
        var body = "<h2>Attack flags</h2>\n<p class=meta>Updates a round left out as likely poisoning: excluded by the plan's robust "
            + "aggregator, or refused by validation (norm, non-finite values, shape, example count). A flag is evidence, not proof; "
            + "a silo flagged round after round raises an alert.</p>\n"
        if !report.attackAlerts.isEmpty {
            body += report.attackAlerts.map {
                "<p><span class=bad>alert</span> \(e($0.silo)) flagged in rounds \(e($0.rounds.map(String.init).joined(separator: ", "))) of plan \(code($0.plan)) "
                    + "(\(e(AuditExport.timestamp($0.at))))</p>\n"
            }.joined()
        }
        body += table(["Plan", "Round", "Silo", "Flag", "Why", "At"], report.attackFlags.map {
            [code($0.plan), "\($0.round)", e($0.silo), "<span class=bad>\(e($0.kind))</span>", e($0.reason), e(AuditExport.timestamp($0.at))]
        }, empty: "No update was flagged.")
        return body
    }

    /// ε against time for one silo's data set, with its cap as a dashed line (inline SVG).
    static func chart(_ s: ComplianceReport.EpsilonSeries) -> String {
        let (w, h, left, bottom, top, right) = (640.0, 220.0, 56.0, 30.0, 16.0, 16.0)
        let top_ = max(s.points.map(\.epsilon).max() ?? 1, s.cap ?? 0) * 1.1
        let t0 = s.points.first!.at.timeIntervalSince1970, t1 = max(s.points.last!.at.timeIntervalSince1970, t0 + 0.001)
        func x(_ t: Date) -> Double { left + (t.timeIntervalSince1970 - t0) / (t1 - t0) * (w - left - right) }
        func y(_ v: Double) -> Double { h - bottom - v / top_ * (h - bottom - top) }
        var svg = "<h3>\(e(s.silo)) · \(e(s.dataset))\(s.cap.map { " · cap ε \(fmt($0, digits: 2))" } ?? "")\(s.perPlanCap.map { ", per plan ε \(fmt($0, digits: 2))" } ?? "")</h3>\n"
        svg += "<svg width=\"\(Int(w))\" height=\"\(Int(h))\" viewBox=\"0 0 \(Int(w)) \(Int(h))\" role=\"img\" aria-label=\"epsilon over time\">"
        svg += "<line x1=\"\(left)\" y1=\"\(h - bottom)\" x2=\"\(w - right)\" y2=\"\(h - bottom)\" stroke=\"#5b6677\"/>"
        svg += "<line x1=\"\(left)\" y1=\"\(top)\" x2=\"\(left)\" y2=\"\(h - bottom)\" stroke=\"#5b6677\"/>"
        for k in 0...4 {
            let v = top_ * Double(k) / 4
            svg += "<text x=\"\(left - 6)\" y=\"\(y(v) + 4)\" font-size=\"10\" text-anchor=\"end\" fill=\"#5b6677\">\(fmt(v, digits: 2))</text>"
        }
        if let cap = s.cap {
            svg += "<line x1=\"\(left)\" y1=\"\(y(cap))\" x2=\"\(w - right)\" y2=\"\(y(cap))\" stroke=\"#b42318\" stroke-dasharray=\"6 4\"/>"
            svg += "<text x=\"\(w - right)\" y=\"\(y(cap) - 4)\" font-size=\"10\" text-anchor=\"end\" fill=\"#b42318\">cap \(fmt(cap, digits: 2))</text>"
        }
        if let plan = s.perPlanCap, plan != s.cap {
            svg += "<line x1=\"\(left)\" y1=\"\(y(plan))\" x2=\"\(w - right)\" y2=\"\(y(plan))\" stroke=\"#8a6100\" stroke-dasharray=\"2 3\"/>"
            svg += "<text x=\"\(w - right)\" y=\"\(y(plan) - 4)\" font-size=\"10\" text-anchor=\"end\" fill=\"#8a6100\">per-plan cap \(fmt(plan, digits: 2))</text>"
        }
        // A step line: ε holds between commits.
        var path = "M\(x(s.points[0].at)),\(y(0)) L\(x(s.points[0].at)),\(y(s.points[0].epsilon))"
        for (a, b) in zip(s.points, s.points.dropFirst()) { path += " L\(x(b.at)),\(y(a.epsilon)) L\(x(b.at)),\(y(b.epsilon))" }
        svg += "<path d=\"\(path)\" fill=\"none\" stroke=\"#1f5fbf\" stroke-width=\"2\"/>"
        for p in s.points { svg += "<circle cx=\"\(x(p.at))\" cy=\"\(y(p.epsilon))\" r=\"2.5\" fill=\"#1f5fbf\"/>" }
        svg += "<text x=\"\(left)\" y=\"\(h - 8)\" font-size=\"10\" fill=\"#5b6677\">\(e(AuditExport.timestamp(s.points.first!.at)))</text>"
        svg += "<text x=\"\(w - right)\" y=\"\(h - 8)\" font-size=\"10\" text-anchor=\"end\" fill=\"#5b6677\">\(e(AuditExport.timestamp(s.points.last!.at)))</text>"
        svg += "</svg>\n<p class=meta>ε committed: \(fmt(s.points.last!.epsilon)) after \(s.points.count) commits</p>\n"
        return svg
    }

    static func table(_ header: [String], _ rows: [[String]], empty: String? = nil) -> String {
        if rows.isEmpty, let empty { return "<p class=empty>\(e(empty))</p>\n" }
        var out = "<table><thead><tr>" + header.map { "<th>\(e($0))</th>" }.joined() + "</tr></thead><tbody>\n"
        for r in rows { out += "<tr>" + r.map { "<td>\($0)</td>" }.joined() + "</tr>\n" }
        return out + "</tbody></table>\n"
    }

    static func scope(_ f: AuditFilter) -> String {
        var parts: [String] = []
        if let from = f.from { parts.append("from \(AuditExport.timestamp(from))") }
        if let to = f.to { parts.append("to \(AuditExport.timestamp(to))") }
        if let silo = f.silo { parts.append("silo \(silo)") }
        if let plan = f.plan { parts.append("plan \(plan)") }
        return parts.isEmpty ? "" : " · " + e(parts.joined(separator: ", "))
    }

    static func code(_ hash: String) -> String { "<code title=\"\(e(hash))\">\(e(String(hash.prefix(12))))…</code>" }
    static func fmt(_ x: Double) -> String { fmt(x, digits: 4) }
    static func fmt(_ x: Double, digits: Int) -> String { String(format: "%.\(digits)f", x) }

    /// HTML-escapes text and attribute values.
    static func e(_ s: String) -> String {
        var out = ""
        out.reserveCapacity(s.count)
        for c in s {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(c)
            }
        }
        return out
    }
}
