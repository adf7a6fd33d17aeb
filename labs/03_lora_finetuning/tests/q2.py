OK_FORMAT = True

test = {   'name': 'q2',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': '>>> from helpers.course.feedback import first_failure\n'
                                               ">>> first_failure((lambda: json_gain is not ... and category_after_low is not ..., 'not done yet: set json_gain and category_after_low'), (lambda: -1 "
                                               "<= json_gain <= 1, lambda: f'a change of a rate is a fraction between -1 and 1 (0.5 for +50 points), got {json_gain!r}'), (lambda: category_after_low "
                                               "< after.loc['category', 'rate'] or after.loc['category', 'rate'] == 0, lambda: 'the lower end of the interval sits below the rate ({:.3f}), got "
                                               "{!r}'.format(after.loc['category', 'rate'], category_after_low)))\n",
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
